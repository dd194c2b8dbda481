console.log("pulse monitor placeholder");
