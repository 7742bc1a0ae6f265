/*
 * Fuzz target: what a custom allocation webhook answers (untrusted bytes from
 * a user's service): custom_allocation_parse, and webhook_excerpt, which
 * quotes any answer in an error message. Properties checked beyond "no
 * crash": an accepted answer has a linked iotHubHostName and an object or no
 * initialTwin; a refusal returns no answer and a message; an excerpt is one
 * line of at most WEBHOOK_EXCERPT_MAX bytes with no control characters.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "src/common/util.h"
#include "src/server/webhook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *request;
    json_t *answer = (json_t *)1;
    char err[256] = "";
    char ex[WEBHOOK_EXCERPT_MAX + 1];
    const char *hub;

    if (request == NULL)
        request = json_pack("{s:[s,s]}", "linkedHubs", "hub1.example.test", "Hub2.Example.Test");
    if (custom_allocation_parse((const char *)data, size, request, &answer, err, sizeof(err)) ==
        0) {
        hub = json_string_value(json_object_get(answer, "iotHubHostName"));
        if (hub == NULL || (!str_ieq(hub, "hub1.example.test") && !str_ieq(hub, "hub2.example.test")))
            abort();
        if (json_object_get(answer, "initialTwin") != NULL &&
            !json_is_object(json_object_get(answer, "initialTwin")))
            abort();
        json_decref(answer);
    } else if (answer != NULL || err[0] == '\0') {
        abort();
    }
    webhook_excerpt((const char *)data, size, ex, WEBHOOK_EXCERPT_MAX);
    if (strlen(ex) > WEBHOOK_EXCERPT_MAX)
        abort();
    for (const unsigned char *p = (const unsigned char *)ex; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            abort();
    }
    return 0;
}
