/*
 * Test tool over src/server/tpm_blob.c for tests/system/t401-tpm-blob-swtpm.sh:
 * reads TPM2B_PUBLIC files as `tpm2_readpublic -f tss` writes them.
 *
 *   tpm_blob_tool name FILE              Name of the EK/SRK in FILE, hex
 *   tpm_blob_tool regid FILE             default registration id of the EK in FILE
 *   tpm_blob_tool blob EK SRK KEYHEX     activation blob (base64) giving the TPM
 *                                        of EK and SRK the HMAC key KEYHEX (64 hex)
 *
 * Exit status 0, or 1 with a reason on stderr (2 for a usage error).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/common/errors.h"
#include "src/common/util.h"
#include "src/server/tpm_blob.h"

static int read_file(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "tpm_blob_tool: cannot open %s\n", path);
        return -1;
    }
    n = fread(buf, 1, cap, f);
    if (ferror(f) || !feof(f)) {
        fprintf(stderr, "tpm_blob_tool: cannot read %s (or larger than %zu bytes)\n", path, cap);
        fclose(f);
        return -1;
    }
    fclose(f);
    *len = n;
    return 0;
}

static int load_public(const char *path, struct tpm_public *pub)
{
    uint8_t buf[TPM_PUBLIC_AREA_MAX + 2];
    const char *why = NULL;
    size_t len = 0;
    int r;

    if (read_file(path, buf, sizeof(buf), &len) != 0)
        return -1;
    if ((r = tpm_public_parse(buf, len, TPM_PUBLIC_PARENT, pub, &why)) != 0) {
        fprintf(stderr, "tpm_blob_tool: %s: %s\n", path, why ? why : prov_strerror(r));
        return -1;
    }
    return 0;
}

static int hex_key(const char *hex, uint8_t key[TPM_BLOB_HMAC_KEY_SIZE])
{
    if (strlen(hex) != 2 * TPM_BLOB_HMAC_KEY_SIZE)
        return -1;
    for (size_t i = 0; i < TPM_BLOB_HMAC_KEY_SIZE; i++) {
        unsigned int v = 0;

        for (int j = 0; j < 2; j++) {
            char c = hex[2 * i + (size_t)j];

            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned int)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned int)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v |= (unsigned int)(c - 'A' + 10);
            else
                return -1;
        }
        key[i] = (uint8_t)v;
    }
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: tpm_blob_tool name FILE\n"
                    "       tpm_blob_tool regid FILE\n"
                    "       tpm_blob_tool blob EK-FILE SRK-FILE KEY-HEX\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct tpm_public ek, srk;
    uint8_t key[TPM_BLOB_HMAC_KEY_SIZE];
    char *b64 = NULL;
    int r;

    if (argc == 3 && strcmp(argv[1], "name") == 0) {
        char hex[2 * TPM_NAME_SIZE + 1];

        if (load_public(argv[2], &ek) != 0)
            return 1;
        hex_encode(ek.name, sizeof(ek.name), hex, false);
        printf("%s\n", hex);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "regid") == 0) {
        uint8_t buf[TPM_PUBLIC_AREA_MAX + 2];
        char id[TPM_REGISTRATION_ID_SIZE];
        size_t len = 0;

        if (read_file(argv[2], buf, sizeof(buf), &len) != 0 ||
            tpm_registration_id(buf, len, id, sizeof(id)) != 0)
            return 1;
        printf("%s\n", id);
        return 0;
    }
    if (argc != 5 || strcmp(argv[1], "blob") != 0)
        return usage();
    if (hex_key(argv[4], key) != 0) {
        fprintf(stderr, "tpm_blob_tool: the key must be %d hex digits\n",
                2 * TPM_BLOB_HMAC_KEY_SIZE);
        return 2;
    }
    if (load_public(argv[2], &ek) != 0 || load_public(argv[3], &srk) != 0)
        return 1;
    r = tpm_activation_blob(&ek, &srk, key, NULL, &b64);
    prov_cleanse(key, sizeof(key));
    if (r != 0) {
        fprintf(stderr, "tpm_blob_tool: blob: %s\n", prov_strerror(r));
        return 1;
    }
    printf("%s\n", b64);
    free(b64);
    return 0;
}
