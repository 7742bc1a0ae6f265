/*
 * libFuzzer target for the Mosquitto connector's reading of the broker's
 * dynamic-security answers (src/server/hub_mosquitto.c,
 * dynsec_parse_answer): the message a broker publishes on the response topic
 * is untrusted input. The first input byte picks how many commands the
 * request in flight had (1 to 4), the rest is the payload. Properties: an
 * answer taken as ours has exactly that many responses, each an object
 * whose correlationData is ours and in order; anything else hands nothing
 * back.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "src/server/hub_mosquitto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIX "provd-0123456789abcdef-"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *resp = (json_t *)data; /* must be reset by the call */
    size_t ncmds;
    enum dynsec_answer a;

    if (size == 0)
        return 0;
    ncmds = (size_t)(data[0] % 4) + 1;
    a = dynsec_parse_answer(data + 1, size - 1, PREFIX, ncmds, &resp);
    if (a != DYNSEC_OURS) {
        if (resp != NULL)
            abort();
        return 0;
    }
    if (!json_is_array(resp) || json_array_size(resp) != ncmds)
        abort();
    for (size_t i = 0; i < ncmds; i++) {
        char want[64];
        const char *got =
            json_string_value(json_object_get(json_array_get(resp, i), "correlationData"));

        snprintf(want, sizeof(want), PREFIX "%zu", i);
        if (got == NULL || strcmp(got, want) != 0)
            abort();
    }
    json_decref(resp);
    return 0;
}
