/*
 * libcurl result codes as PROV_E* codes, shared by the users of libcurl
 * (libprov's HTTPS transport, provd's webhooks). Header-only: the common
 * library itself does not link libcurl.
 */
#ifndef PROV_COMMON_CURL_ERRORS_H
#define PROV_COMMON_CURL_ERRORS_H

#include <curl/curl.h>

#include "errors.h"

static inline int prov_curl_error(CURLcode cc)
{
    switch (cc) {
    case CURLE_OUT_OF_MEMORY:
        return PROV_ENOMEM;
    case CURLE_OPERATION_TIMEDOUT:
        return PROV_ETIMEOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
        return PROV_ETLS;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return PROV_EINVAL;
    case CURLE_WEIRD_SERVER_REPLY:
        return PROV_EPROTO;
    default:
        return PROV_EIO;
    }
}

#endif
