/* Request handlers of the two HTTPS APIs, called by the router. */
#ifndef PROV_SERVER_API_H
#define PROV_SERVER_API_H

#include "http.h"
#include "server.h"

/*
 * Device API: PUT /{idScope}/registrations/{id}/register,
 * GET /{idScope}/registrations/{id}/operations/{opId},
 * POST /{idScope}/registrations/{id}. segs are the raw path segments.
 */
void device_api_handle(struct worker *w, struct http_request *req, struct http_response *resp,
                       char **segs, int nsegs);

/*
 * Service API: /enrollments..., /enrollmentGroups..., /registrations...
 * (case-insensitive), authenticated by shared access policies.
 */
void service_api_handle(struct worker *w, struct http_request *req, struct http_response *resp,
                        char **segs, int nsegs);

/*
 * The ID scope a service-API or CA-API request addresses: its idScope query
 * parameter (case-insensitive), else the first configured scope. NULL after
 * answering 400 (malformed) or 404 (unknown scope).
 */
const char *service_pick_scope(struct worker *w, struct http_request *req,
                               struct http_response *resp);

/*
 * CA certificates with proof of possession (provd's admin API, in the shapes
 * of DPS's ARM API): segs[0] is "certificates" (the router strips an ARM
 * prefix /subscriptions/../provisioningServices/{name}). Authenticated by
 * shared access policies with the ServiceConfig right.
 */
void ca_api_handle(struct worker *w, struct http_request *req, struct http_response *resp,
                   char **segs, int nsegs);

#endif
