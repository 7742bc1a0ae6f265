/*
 * Routes a request to the device API or the service API by path. Both share
 * port 443 (the SDKs hard-code it): service paths start with enrollments,
 * enrollmentGroups or registrations (case-insensitive); device paths with an
 * ID scope followed by "registrations". CA certificates (ca_api.c) live under
 * /certificates, also reachable under DPS's ARM prefix
 * /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Devices/
 * provisioningServices/{name}, which is stripped (matched case-insensitively).
 */
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "api.h"
#include "http.h"
#include "server.h"

#define MAX_SEGS 16
#define ARM_PREFIX_SEGS 8

/* /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Devices/provisioningServices/{n} */
static bool is_arm_prefix(char **segs, int nsegs)
{
    return nsegs > ARM_PREFIX_SEGS && str_ieq(segs[0], "subscriptions") &&
           str_ieq(segs[2], "resourceGroups") && str_ieq(segs[4], "providers") &&
           str_ieq(segs[5], "Microsoft.Devices") && str_ieq(segs[6], "provisioningServices");
}

void router_handle(struct worker *w, struct http_request *req, struct http_response *resp)
{
    char *copy = strdup(req->path);
    char *segs[MAX_SEGS];
    int nsegs = 0;
    char *p, *save = NULL;
    bool trailing_slash;

    if (copy == NULL) {
        http_response_error(resp, req, 500001, "out of memory");
        return;
    }
    trailing_slash = strlen(copy) > 1 && copy[strlen(copy) - 1] == '/';
    for (p = strtok_r(copy, "/", &save); p != NULL; p = strtok_r(NULL, "/", &save)) {
        if (nsegs == MAX_SEGS) {
            http_response_error(resp, req, 404001, "no such resource");
            free(copy);
            return;
        }
        segs[nsegs++] = p;
    }
    (void)trailing_slash;
    if (is_arm_prefix(segs, nsegs) && str_ieq(segs[ARM_PREFIX_SEGS], "certificates")) {
        ca_api_handle(w, req, resp, segs + ARM_PREFIX_SEGS, nsegs - ARM_PREFIX_SEGS);
    } else if (nsegs >= 1 && str_ieq(segs[0], "certificates")) {
        ca_api_handle(w, req, resp, segs, nsegs);
    } else if (nsegs >= 1 && (str_ieq(segs[0], "enrollments") ||
                              str_ieq(segs[0], "enrollmentGroups") ||
                              str_ieq(segs[0], "registrations"))) {
        service_api_handle(w, req, resp, segs, nsegs);
    } else if (nsegs >= 3 && strcmp(segs[1], "registrations") == 0) {
        device_api_handle(w, req, resp, segs, nsegs);
    } else {
        http_response_error(resp, req, 404001, "no such resource");
    }
    free(copy);
}
