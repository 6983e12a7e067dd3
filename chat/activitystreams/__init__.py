"""Activity Streams 2.0 (https://www.w3.org/TR/activitystreams-core/): the room activity
history and the notification feed as AS2 ``OrderedCollectionPage``s, and AS2 activities as
activity items. Plain code: the routes (``chat.api.activity``) negotiate and do the IO.

A verb maps to the AS2 activity type of ``VERB_TYPES`` where one fits, and is kept as its
own name otherwise (``"built"`` stays the type ``"built"``, an IRI of this deployment's
extension namespace); the table and examples are in docs/activitystreams.md. Every
document carries ``context(base_url)``: the AS2 context, then the extension terms
(``EXTENSION_TERMS``) so that a JSON-LD expansion keeps every property.

``vocabulary`` holds the terms, types and URLs; ``documents`` what goes out; ``incoming``
what comes in, and the content negotiation."""

from __future__ import annotations

from chat.activitystreams.documents import (
    activity_page,
    activity_to_as2,
    collection_page,
    notification_group_to_as2,
    notifications_page,
)
from chat.activitystreams.incoming import as2_to_activity, is_as2, wants_as2
from chat.activitystreams.vocabulary import (
    AS2_CONTEXT,
    AS2_MEDIA_TYPE,
    AS2_MEDIA_TYPES,
    EXTENSION_TERMS,
    VERB_TYPES,
    as2_type,
    context,
    namespace,
)

__all__ = [
    "AS2_CONTEXT",
    "AS2_MEDIA_TYPE",
    "AS2_MEDIA_TYPES",
    "EXTENSION_TERMS",
    "VERB_TYPES",
    "activity_page",
    "activity_to_as2",
    "as2_to_activity",
    "as2_type",
    "collection_page",
    "context",
    "is_as2",
    "namespace",
    "notification_group_to_as2",
    "notifications_page",
    "wants_as2",
]
