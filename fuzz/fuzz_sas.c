/*
 * libFuzzer target for SAS token parsing (src/common/sas.c): the input is an
 * Authorization header value as a device or service client sends it. A token
 * that parses is checked against a fixed key; tokens are also rebuilt with
 * sas_build from the parsed resource, and the rebuilt token must parse and
 * verify (a property any correct pair of builder and parser has).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "src/common/limits.h"
#include "src/common/sas.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY_B64 "dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleTEyMzQ="

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t key[] = "testkeytestkeytestkeytestkey1234";
    struct sas_token tok;
    const char *why = NULL;
    char *header;
    char *rebuilt;

    if (size > 4 * PROV_MAX_SAS_TOKEN)
        return 0;
    header = malloc(size + 1);
    if (header == NULL)
        return 0;
    memcpy(header, data, size);
    header[size] = '\0';
    if (sas_parse(header, &tok, &why) == 0) {
        (void)sas_check_key(&tok, key, sizeof(key) - 1);
        (void)sas_check_b64_key(&tok, KEY_B64);
        rebuilt = sas_build(tok.sr, KEY_B64, tok.has_skn ? "registration" : NULL, tok.se);
        if (rebuilt != NULL) {
            struct sas_token again;

            char *enc = url_encode_alloc(tok.sr);

            /* a decoded sr may encode to more than the parser keeps: only then may it fail */
            if (sas_parse(rebuilt, &again, &why) == 0) {
                if (strcmp(again.sr, tok.sr) != 0 || again.se != tok.se ||
                    !sas_check_key(&again, key, sizeof(key) - 1))
                    abort();
            } else if (enc != NULL && strlen(enc) < sizeof(again.sr_raw) &&
                       strlen(rebuilt) <= PROV_MAX_SAS_TOKEN) {
                abort();
            }
            free(enc);
            free(rebuilt);
        }
    } else if (why == NULL) {
        abort(); /* every refusal says why */
    }
    free(header);
    return 0;
}
