/*
 * Test tool over libprov's TPM backend (src/lib/tpm.c) for
 * tests/system/t402-prov-device-tpm.sh: the device side of TPM attestation
 * without a server, against a TPM named by a TCTI configuration string.
 *
 *   tpm_device_tool keys TCTI EK-FILE SRK-FILE   creates/reuses the EK and SRK, writes
 *                                               their TPM2B_PUBLIC, prints the default
 *                                               registration id
 *   tpm_device_tool import TCTI BLOB-FILE        imports the base64 activation blob in
 *                                               BLOB-FILE at 0x81000100
 *   tpm_device_tool hmac TCTI MSG-FILE           HMAC-SHA256 of MSG-FILE by the key at
 *                                               0x81000100, hex
 *
 * The backend's log lines go to stderr. Exit status 0, or 1 with a reason on
 * stderr (2 for a usage error).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/common/errors.h"
#include "src/common/util.h"
#include "src/lib/lib.h"
#include "src/lib/tpm.h"

#define MAX_INPUT (256 * 1024)

static void on_log(int level, const char *msg, void *arg)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    (void)arg;
    fprintf(stderr, "tpm_device_tool: %s: %s\n", level >= 0 && level <= 3 ? names[level] : "?",
            msg);
}

/* Reads a whole file (at most MAX_INPUT bytes) into a NUL-terminated buffer. */
static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(MAX_INPUT + 1);
    size_t n = 0;

    if (f == NULL || buf == NULL) {
        fprintf(stderr, "tpm_device_tool: cannot open %s\n", path);
        goto fail;
    }
    n = fread(buf, 1, MAX_INPUT + 1, f);
    if (ferror(f) || n > MAX_INPUT) {
        fprintf(stderr, "tpm_device_tool: cannot read %s (or larger than %d bytes)\n", path,
                MAX_INPUT);
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
fail:
    if (f != NULL)
        fclose(f);
    free(buf);
    return NULL;
}

static int write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "tpm_device_tool: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

static int cmd_keys(struct lib_tpm *t, const char *ek_path, const char *srk_path)
{
    char id[LIB_TPM_REGID_SIZE];
    const uint8_t *p;
    size_t len;

    p = lib_tpm_ek_public(t, &len);
    if (write_file(ek_path, p, len) != 0)
        return 1;
    p = lib_tpm_srk_public(t, &len);
    if (write_file(srk_path, p, len) != 0 || lib_tpm_registration_id(t, id) != 0)
        return 1;
    printf("%s\n", id);
    return 0;
}

static int cmd_import(struct lib_tpm *t, const char *path)
{
    size_t len = 0;
    uint8_t *text = read_file(path, &len);
    int r;

    if (text == NULL)
        return 1;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        text[--len] = '\0';
    r = lib_tpm_import_blob(t, (const char *)text);
    free(text);
    return r == 0 ? 0 : 1;
}

static int cmd_hmac(struct lib_tpm *t, const char *path)
{
    size_t len = 0;
    uint8_t *data = read_file(path, &len);
    uint8_t mac[32];
    char hex[65];
    int r;

    if (data == NULL)
        return 1;
    r = lib_tpm_hmac(t, data, len, mac);
    free(data);
    if (r != 0)
        return 1;
    hex_encode(mac, sizeof(mac), hex, false);
    printf("%s\n", hex);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: tpm_device_tool keys TCTI EK-FILE SRK-FILE\n"
                    "       tpm_device_tool import TCTI BLOB-FILE\n"
                    "       tpm_device_tool hmac TCTI MSG-FILE\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct lib_tpm *t = NULL;
    int r;

    if (argc < 4 || (strcmp(argv[1], "keys") == 0 ? argc != 5 : argc != 4))
        return usage();
    if (strcmp(argv[1], "keys") != 0 && strcmp(argv[1], "import") != 0 &&
        strcmp(argv[1], "hmac") != 0)
        return usage();
    prov_set_log_callback(on_log, NULL);
    if ((r = lib_tpm_open(argv[2], &t)) != 0) {
        fprintf(stderr, "tpm_device_tool: cannot open the TPM: %s\n", prov_strerror(r));
        return 1;
    }
    if (strcmp(argv[1], "keys") == 0)
        r = cmd_keys(t, argv[3], argv[4]);
    else if (strcmp(argv[1], "import") == 0)
        r = cmd_import(t, argv[3]);
    else
        r = cmd_hmac(t, argv[3]);
    lib_tpm_close(t);
    return r;
}
