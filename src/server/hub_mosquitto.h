/*
 * What hub_mosquitto.c reads from the broker, exposed for the unit tests and
 * the fuzzer: the dynamic-security plugin's answer, published on
 * $CONTROL/dynamic-security/v1/response, is untrusted input.
 */
#ifndef PROV_SERVER_HUB_MOSQUITTO_H
#define PROV_SERVER_HUB_MOSQUITTO_H

#include <stddef.h>

#include <jansson.h>

enum dynsec_answer {
    DYNSEC_NOT_OURS,  /* not JSON, no "responses" array, or another request's answer: ignored */
    DYNSEC_OURS,      /* the answer to our request, well formed */
    DYNSEC_MALFORMED, /* answers our request (its first correlationData) but is not usable */
};

/*
 * Reads one message of the response topic against the request in flight:
 * ncmds commands whose correlationData were corr_prefix followed by 0, 1, ...
 * DYNSEC_OURS when "responses" holds exactly ncmds objects whose
 * correlationData are those, in order; *responses then owns that array.
 * Otherwise *responses is NULL.
 */
enum dynsec_answer dynsec_parse_answer(const void *payload, size_t len, const char *corr_prefix,
                                       size_t ncmds, json_t **responses);

#endif
