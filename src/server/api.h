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

#endif
