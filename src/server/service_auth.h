/*
 * Service-API authentication: shared access signatures made with a configured
 * shared access policy key (DPS's "SharedAccessSignature sr=..&sig=..&se=..&skn=..").
 * Pure logic over the config, the request's Authorization and Host headers and
 * its path, so the unit tests drive it without a server.
 */
#ifndef PROV_SERVER_SERVICE_AUTH_H
#define PROV_SERVER_SERVICE_AUTH_H

#include <stddef.h>

#include "../common/util.h"
#include "config.h"

/*
 * Checks a request against the configured policies:
 *  - authorization: the Authorization header value (NULL when absent);
 *  - host: the Host header value (NULL when absent);
 *  - path: the raw request path (not percent-decoded, no query);
 *  - required: the RIGHT_* bits the operation needs;
 *  - now: the current time, unix seconds.
 * The policy is found by skn (case-insensitively); the HMAC is over sr and se
 * as sent; se plus PROV_SAS_SKEW_SECONDS must not be past; the decoded sr's
 * host must equal the Host header's (case-insensitive, ports ignored) and its
 * path, if any, must be a segment-wise prefix of the request path.
 * Returns 0 (on success *policy, if not NULL, points at the matching policy),
 * or PROV_EAUTH with a client-safe reason in why (never the signature).
 */
int service_auth_check(const struct config *cfg, const char *authorization, const char *host,
                       const char *path, unsigned required, long long now,
                       const struct cfg_policy **policy, char *why, size_t whylen) PROV_WUR;

/* "EnrollmentRead" etc. for a single RIGHT_* bit; "unknown" otherwise. */
const char *service_right_name(unsigned right);

#endif
