/*
 * Service-API request bodies (untrusted JSON): parse, validate and build the
 * stored document for an individual enrollment and a group, with and without
 * an existing document, then render it back as GET and PUT would. The first
 * byte picks the variant; the rest is the body.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "src/server/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const json_t *existing_doc(void)
{
    static json_t *doc;

    if (doc == NULL)
        doc = json_pack("{s:s, s:{s:s, s:{s:s, s:s}}}", "registrationId", "fuzz-dev",
                        "attestation", "type", "symmetricKey", "symmetricKey", "primaryKey",
                        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "secondaryKey",
                        "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=");
    return doc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct cfg_hub hubs[2] = {
        {.hostname = "hub1.example.test", .weight = 1, .apply_allocation_policy = true},
        {.hostname = "hub2.example.test", .weight = 1, .apply_allocation_policy = true},
    };
    json_t *body = NULL, *out = NULL, *view;
    const char *att = NULL;
    char err[512];
    unsigned variant;

    if (size < 1)
        return 0;
    variant = data[0];
    if (model_parse_object((const char *)data + 1, size - 1, true, &body, err, sizeof(err)) != 0 ||
        body == NULL)
        return 0;
    if (model_prepare((variant & 1) ? STORE_GROUP : STORE_ENROLLMENT,
                      (variant & 1) ? "fuzz-group" : "fuzz-dev", body,
                      (variant & 2) ? existing_doc() : NULL, hubs, 2, &out, &att, err,
                      sizeof(err)) == 0) {
        view = model_render(out, "etag", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z",
                            0);
        model_json_free(view);
        view = model_attestation(out);
        model_json_free(view);
        model_json_free(out);
    }
    model_json_free(body);
    return 0;
}
