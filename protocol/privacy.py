"""Shared names of the privacy stages (issue 14, docs/privacy.md): consent categories, the event
flags consent and anonymization stamp, and what an ingest answer says of an event it did not store.

An event the pipeline drops on purpose is answered 2xx (the request was valid and is not to be
retried) with ``stored: false`` and a ``dropped`` object naming the reason (and the consent
category, for consent drops); every drop is counted on ``/monitoring/performance`` under
``drops["<reason>"]`` (``drops["consent_<category>"]`` for consent).
"""

from __future__ import annotations

from typing import Final

import msgspec

# Consent categories (seed 000 ``granularConsent``). What each gates, in the pipeline:
ANALYTICS: Final = "analytics"  # not granted: the event is not stored or processed at all
MARKETING: Final = "marketing"  # not granted: no trigger firings or workflow actions for the event
PERSONALIZATION: Final = "personalization"  # not granted: no insights or personalization
ADVERTISING: Final = "advertising"  # not granted: not shared with advertising integrations
CATEGORIES: Final = (ANALYTICS, MARKETING, PERSONALIZATION, ADVERTISING)

# Event.flags bits stamped at ingest (protocol/record.py has bits 1 and 2).
FLAG_NO_MARKETING: Final = 4
FLAG_NO_PERSONALIZATION: Final = 8
FLAG_NO_ADVERTISING: Final = 16
FLAG_GPC: Final = 32  # the request carried Sec-GPC: 1 (implies no marketing and no advertising)
FLAG_ANONYMIZED_LOW: Final = 64
FLAG_ANONYMIZED_HIGH: Final = 128
# The request stated the event's consent itself (privacy-compliant ingest's ``consentLevel``, already
# stamped as flags): the consent stage applies only GPC to it, not the user's record or the default.
FLAG_CONSENT_STATED: Final = 256

# Drop reasons (the ``reason`` of Dropped, and the metrics' drop counter names)
DROP_CONSENT: Final = "consent"
DROP_RATE_LIMITED: Final = "rate_limited"  # whole requests: answered 429, never stored
DROP_SAMPLING: Final = "sampling"  # adaptive sampling of low-value events under overload


class Dropped(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Why an accepted event was not stored."""

    reason: str  # DROP_CONSENT | DROP_SAMPLING
    category: str | None = None  # the consent category that was not granted
    detail: str | None = None  # for people: e.g. "no analytics consent recorded for user 'u1'"
