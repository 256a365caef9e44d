"""Server-rendered pages for case handlers, custodians, IT and oversight (docs/web.md).

The pages call the same services as the JSON API (server/cases, server/verification, server/export,
server/auth): the same roles, the same case-level rules, the same custody events for every view of
evidence. Media is played straight from the API's ``/api/v1/segments/{device}/{seq}/media`` route
(HTTP Range, a ``streamed`` event per request) with the same session cookie.
"""
