/*
 * libFuzzer target for the TPM2B_PUBLIC parser (src/server/tpm_blob.c): the
 * input is an endorsementKey / storageRootKey as a device sends it (base64-
 * decoded). It is parsed for both roles. Invariants checked (abort on
 * violation):
 *   - a refusal is PROV_EPROTO with a reason;
 *   - an accepted area is the input without its 2-byte size, and its Name is
 *     000b ‖ SHA-256 of that area;
 *   - what parses as a parent (EK/SRK) also parses as TPM_PUBLIC_ANY with the
 *     same Name, and is an RSA-2048 key with an odd exponent;
 *   - for a parent, an activation blob to it (as EK and SRK) either fails with
 *     PROV_ECRYPTO or is 798 bytes of base64;
 *   - the registration id of any input is 52 base32 characters.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "src/common/errors.h"
#include "src/common/util.h"
#include "src/server/tpm_blob.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                 \
    do {                                                                                         \
        if (!(c))                                                                                \
            abort();                                                                             \
    } while (0)

static int fixed_fill(void *arg, enum tpm_blob_random what, uint8_t *out, size_t len)
{
    (void)arg;
    memset(out, 0x40 + (int)what, len);
    return 0;
}

static void check_accepted(const uint8_t *data, size_t size, const struct tpm_public *pub)
{
    uint8_t name[TPM_NAME_SIZE];

    CHECK(pub->area_len + 2 == size);
    CHECK(memcmp(pub->area, data + 2, pub->area_len) == 0);
    CHECK(pub->name_alg == TPM_BLOB_ALG_SHA256);
    CHECK(tpm_name(pub->area, pub->area_len, name) == 0);
    CHECK(memcmp(name, pub->name, sizeof(name)) == 0);
}

static int parse(const uint8_t *data, size_t size, enum tpm_public_role role,
                 struct tpm_public *pub)
{
    const char *why = NULL;
    int r = tpm_public_parse(data, size, role, pub, &why);

    if (r == 0) {
        CHECK(why == NULL);
        check_accepted(data, size, pub);
    } else {
        CHECK(r == PROV_EPROTO);
        CHECK(why != NULL && why[0] != '\0');
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tpm_public any, parent;
    static const struct tpm_blob_rng rng = {fixed_fill, NULL};
    char id[TPM_REGISTRATION_ID_SIZE];
    int r_any, r_parent;

    if (size > 4 * TPM_PUBLIC_AREA_MAX)
        return 0;
    CHECK(tpm_registration_id(data, size, id, sizeof(id)) == 0);
    CHECK(strlen(id) == 52);

    r_any = parse(data, size, TPM_PUBLIC_ANY, &any);
    r_parent = parse(data, size, TPM_PUBLIC_PARENT, &parent);
    if (r_parent == 0) {
        uint8_t k[TPM_BLOB_HMAC_KEY_SIZE] = {0};
        char *b64 = NULL;
        int r;

        CHECK(r_any == 0);
        CHECK(memcmp(any.name, parent.name, TPM_NAME_SIZE) == 0);
        CHECK(parent.type == TPM_BLOB_ALG_RSA && parent.key_bits == 2048);
        CHECK(parent.modulus_len == 256 && (parent.modulus[0] & 0x80) != 0);
        CHECK(parent.exponent >= 3 && parent.exponent % 2 == 1);
        r = tpm_activation_blob(&parent, &parent, k, &rng, &b64);
        if (r == 0) {
            CHECK(b64 != NULL && strlen(b64) == b64_encoded_len(798));
            free(b64);
        } else {
            CHECK(r == PROV_ECRYPTO && b64 == NULL);
        }
    }
    return 0;
}
