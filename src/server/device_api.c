/* placeholder until the real handler lands */
#include "api.h"

void device_api_handle(struct worker *w, struct http_request *req, struct http_response *resp,
                 char **segs, int nsegs)
{
    (void)w;
    (void)segs;
    (void)nsegs;
    http_response_error(resp, req, 501001, "not available yet");
}
