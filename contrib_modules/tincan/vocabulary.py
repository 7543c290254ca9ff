"""The xAPI vocabulary tincan uses: verb ids, activity types, extension IRIs.

Those of Open edX's transformer (event-routing-backends), and Ralph's for pages.
"""

__all__ = ["XAPI_VERSION", "Verb", "Activity", "Ext", "INTERACTION_TYPES"]

XAPI_VERSION = "1.0.3"


class Verb:
    """Verb ids Open edX uses (and Ralph, for page views)."""

    INITIALIZED = "http://adlnet.gov/expapi/verbs/initialized"
    TERMINATED = "http://adlnet.gov/expapi/verbs/terminated"
    COMPLETED = "http://adlnet.gov/expapi/verbs/completed"
    INTERACTED = "http://adlnet.gov/expapi/verbs/interacted"
    ATTEMPTED = "http://adlnet.gov/expapi/verbs/attempted"
    ASKED = "http://adlnet.gov/expapi/verbs/asked"
    REGISTERED = "http://adlnet.gov/expapi/verbs/registered"
    PASSED = "http://adlnet.gov/expapi/verbs/passed"
    FAILED = "http://adlnet.gov/expapi/verbs/failed"
    PROGRESSED = "http://adlnet.gov/expapi/verbs/progressed"
    PLAYED = "https://w3id.org/xapi/video/verbs/played"
    PAUSED = "https://w3id.org/xapi/video/verbs/paused"
    SEEKED = "https://w3id.org/xapi/video/verbs/seeked"
    EVALUATED = "https://w3id.org/xapi/acrossx/verbs/evaluated"
    POSTED = "https://w3id.org/xapi/acrossx/verbs/posted"
    EDITED = "https://w3id.org/xapi/acrossx/verbs/edited"
    REPORTED = "https://w3id.org/xapi/acrossx/verbs/reported"
    NAVIGATED = "https://w3id.org/xapi/dod-isd/verbs/navigated"
    DELETED = "https://w3id.org/xapi/dod-isd/verbs/deleted"
    UNREPORTED = "https://w3id.org/xapi/openedx/verb/unreported"
    VOTED = "https://w3id.org/xapi/openedx/verb/voted"
    UNREGISTERED = "http://id.tincanapi.com/verb/unregistered"
    EARNED = "http://id.tincanapi.com/verb/earned"
    VIEWED = "http://id.tincanapi.com/verb/viewed"


class Activity:
    """Activity types (``object.definition.type``)."""

    VIDEO = "https://w3id.org/xapi/video/activity-type/video"
    COURSE = "http://adlnet.gov/expapi/activities/course"
    INTERACTION = "http://adlnet.gov/expapi/activities/cmi.interaction"
    QUESTION = "http://adlnet.gov/expapi/activities/question"
    LINK = "http://adlnet.gov/expapi/activities/link"
    MODULE = "http://adlnet.gov/expapi/activities/module"
    ATTEMPT = "http://adlnet.gov/expapi/activities/attempt"
    RESOURCE = "http://id.tincanapi.com/activitytype/resource"
    SOLUTION = "http://id.tincanapi.com/activitytype/solution"
    DISCUSSION = "http://id.tincanapi.com/activitytype/discussion"
    HINT = "https://w3id.org/xapi/acrossx/extensions/supplemental-info"
    PAGE = "http://activitystrea.ms/schema/1.0/page"
    ASSESSMENT = "https://w3id.org/xapi/openedx/activity/{kind}-assessment"


# Open edX response types → xAPI interaction types (anything else is "other").
INTERACTION_TYPES = {
    "choiceresponse": "choice", "multiplechoiceresponse": "choice", "optionresponse": "choice",
    "choicetextresponse": "choice", "numericalresponse": "numeric", "stringresponse": "fill-in",
    "formularesponse": "fill-in", "annotationresponse": "fill-in", "symbolicresponse": "fill-in",
    "coderesponse": "performance", "externalresponse": "performance", "schematicresponse": "sequencing",
    "imageresponse": "matching", "truefalseresponse": "true-false", "customresponse": "other",
}


class Ext:
    """Extension IRIs (of results, contexts and activity definitions)."""

    VIDEO = "https://w3id.org/xapi/video/extensions/"  # + "time", "length", "cc-enabled"...
    SESSION = "https://w3id.org/xapi/openedx/extensions/session-id"
    SPEED = "https://w3id.org/xapi/openedx/extension/speed-"  # + "from", "to"
    TOTAL_ITEMS = "https://w3id.org/xapi/acrossx/extensions/total-items"
    MODE = "https://w3id.org/xapi/acrossx/extensions/type"
    TIME_LIMIT = "https://w3id.org/xapi/acrossx/extensions/time-limit"
    ATTEMPT_ID = "http://id.tincanapi.com/extension/attempt-id"
    START = "http://id.tincanapi.com/extension/starting-position"
    END = "http://id.tincanapi.com/extension/ending-point"
    PROGRESS = "https://w3id.org/xapi/cmi5/result/extensions/progress"
    GRADE = "http://www.tincanapi.co.uk/activitytypes/grade_classification"
