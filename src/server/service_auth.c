/*
 * Service-API SAS verification (see service_auth.h). Each failure gets its own
 * message so an operator can tell a clock problem from a wrong key; none of
 * them repeats the signature.
 */
#include "service_auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/limits.h"
#include "../common/sas.h"

static int deny(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int deny(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (why != NULL && whylen > 0) {
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return PROV_EAUTH;
}

const char *service_right_name(unsigned right)
{
    switch (right) {
    case RIGHT_SERVICE_CONFIG: return "ServiceConfig";
    case RIGHT_ENROLLMENT_READ: return "EnrollmentRead";
    case RIGHT_ENROLLMENT_WRITE: return "EnrollmentWrite";
    case RIGHT_DEVICE_CONNECT: return "DeviceConnect";
    case RIGHT_REGISTRATION_READ: return "RegistrationStatusRead";
    case RIGHT_REGISTRATION_WRITE: return "RegistrationStatusWrite";
    default: return "unknown";
    }
}

/* Length of the host part of "host", "host:port", "[v6]" or "[v6]:port". */
static size_t host_len(const char *s, size_t len)
{
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);

        return close != NULL ? (size_t)(close - s) + 1 : len;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ':')
            return i;
    }
    return len;
}

/*
 * Whether sr_path (decoded, starting with '/') is a segment-wise prefix of the
 * request path, case-insensitively: "/a/b" covers "/a/b" and "/a/b/c" but not
 * "/a/bc". Trailing slashes of the audience are ignored.
 */
static bool path_covers(const char *sr_path, size_t splen, const char *req_path)
{
    size_t rlen = strlen(req_path);
    char *dec;
    int n;
    bool ok;

    while (splen > 0 && sr_path[splen - 1] == '/')
        splen--;
    if (splen == 0)
        return true;
    dec = malloc(rlen + 1);
    if (dec == NULL)
        return false;
    n = url_decode(req_path, rlen, dec, false);
    ok = n >= 0 && (size_t)n >= splen && str_ieqn(dec, sr_path, splen) &&
         (dec[splen] == '\0' || dec[splen] == '/');
    free(dec);
    return ok;
}

static int check_audience(const char *sr, const char *host, const char *path, char *why,
                          size_t whylen)
{
    const char *slash = strchr(sr, '/');
    size_t srlen = slash != NULL ? (size_t)(slash - sr) : strlen(sr);
    size_t srh = host_len(sr, srlen);
    size_t hh;

    if (host == NULL || *host == '\0')
        return deny(why, whylen, "the request has no Host header to check the token's audience");
    hh = host_len(host, strlen(host));
    if (srh == 0 || srh != hh || !str_ieqn(sr, host, srh))
        return deny(why, whylen, "the token's audience (sr) is not this host");
    if (slash != NULL && !path_covers(slash, strlen(slash), path))
        return deny(why, whylen, "the token's audience (sr) does not cover this path");
    return 0;
}

int service_auth_check(const struct config *cfg, const char *authorization, const char *host,
                       const char *path, unsigned required, long long now,
                       const struct cfg_policy **policy, char *why, size_t whylen)
{
    struct sas_token tok;
    const struct cfg_policy *p = NULL;
    const char *reason = NULL;
    int r = PROV_EAUTH;

    if (policy != NULL)
        *policy = NULL;
    if (authorization == NULL || *authorization == '\0')
        return deny(why, whylen, "the request has no Authorization header");
    while (*authorization == ' ')
        authorization++;
    if (str_ieqn(authorization, "Bearer ", 7))
        return deny(why, whylen, "bearer tokens are not supported; use a shared access signature");
    if (sas_parse(authorization, &tok, &reason) != 0) {
        r = deny(why, whylen, "malformed shared access signature: %s", reason);
        goto out;
    }
    if (!tok.has_skn || tok.skn[0] == '\0') {
        r = deny(why, whylen, "the shared access signature names no policy (skn)");
        goto out;
    }
    for (size_t i = 0; i < cfg->npolicies; i++) {
        if (str_ieq(cfg->policies[i].name, tok.skn)) {
            p = &cfg->policies[i];
            break;
        }
    }
    if (p == NULL) {
        r = deny(why, whylen, "unknown shared access policy '%.128s'", tok.skn);
        goto out;
    }
    if (tok.se + PROV_SAS_SKEW_SECONDS < now) {
        r = deny(why, whylen, "the shared access signature has expired");
        goto out;
    }
    if (!sas_check_key(&tok, p->key, p->keylen)) {
        r = deny(why, whylen, "the shared access signature does not match policy '%s'", p->name);
        goto out;
    }
    if ((r = check_audience(tok.sr, host, path, why, whylen)) != 0)
        goto out;
    for (unsigned bit = 1; bit <= RIGHT_ALL; bit <<= 1) {
        if ((required & bit) && !(p->rights & bit)) {
            r = deny(why, whylen, "policy '%s' lacks the %s right", p->name,
                     service_right_name(bit));
            goto out;
        }
    }
    if (policy != NULL)
        *policy = p;
    r = 0;
out:
    prov_cleanse(&tok, sizeof(tok));
    return r;
}
