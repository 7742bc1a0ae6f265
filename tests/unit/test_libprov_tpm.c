/*
 * Unit tests for libprov's TPM and hub-password API (include/prov/prov.h,
 * since 0.4) that need no TPM: prov_client_hub_password for key clients
 * (the value of hub_password_derive in src/common/sas.h), the argument and
 * credential-kind checks of prov_client_set_tpm (TPM over MQTT refused before
 * any TPM is touched), and how a TCTI that cannot be opened is reported. The
 * TPM paths themselves run against swtpm in tests/system/t402-prov-device-tpm.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "src/common/errors.h"
#include "prov/prov.h"
#include "src/common/sas.h"
#include "src/common/util.h"

#define SCOPE "0ne00ABC123"
#define REG_ID "my-device-01"
#define KEY "dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleTEyMzQ="
/* device-protocol §4.2: KEY as a group key, derived for REG_ID */
#define DERIVED_KEY "gnux+XH2snPHbAtAEL2G7i2fdltewR+PV0cVHVydVH0="
/* nothing listens on port 1: the swtpm TCTI cannot connect */
#define DEAD_TCTI "swtpm:host=127.0.0.1,port=1"

static char last_error[1024];

static void on_log(int level, const char *msg, void *arg)
{
    (void)arg;
    if (level == PROV_LOG_ERROR)
        snprintf(last_error, sizeof(last_error), "%s", msg);
}

static struct prov_client *new_client(enum prov_transport transport)
{
    struct prov_options opt = PROV_OPTIONS_INIT;
    struct prov_client *c = NULL;

    opt.host = "127.0.0.1:1";
    opt.id_scope = SCOPE;
    opt.registration_id = REG_ID;
    opt.transport = transport;
    assert_int_equal(prov_client_new(&opt, &c), 0);
    last_error[0] = '\0';
    return c;
}

/* hub_password_derive with the base64 key b64 for device_id */
static void expected_password(const char *b64, const char *device_id, char out[45])
{
    uint8_t key[64];
    int n = b64_decode(b64, strlen(b64), key);

    assert_true(n > 0);
    assert_int_equal(hub_password_derive(key, (size_t)n, device_id, out), 0);
}

static void test_hub_password_symmetric_key(void **state)
{
    struct prov_client *c = new_client(PROV_TRANSPORT_HTTPS);
    char want[45], *pw = NULL;

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_client_hub_password(c, "device-7", &pw), 0);
    expected_password(KEY, "device-7", want);
    assert_string_equal(pw, want);
    assert_int_equal(strlen(pw), 44);
    prov_free(pw);
    prov_client_free(c);
}

static void test_hub_password_group_key(void **state)
{
    struct prov_client *c = new_client(PROV_TRANSPORT_HTTPS);
    char want[45], *pw = NULL;

    (void)state;
    assert_int_equal(prov_client_set_group_key(c, KEY), 0);
    assert_int_equal(prov_client_hub_password(c, REG_ID, &pw), 0);
    /* the derived key, not the group key */
    expected_password(DERIVED_KEY, REG_ID, want);
    assert_string_equal(pw, want);
    prov_free(pw);
    prov_client_free(c);
}

static void test_hub_password_bad_arguments(void **state)
{
    struct prov_client *c = new_client(PROV_TRANSPORT_HTTPS);
    char long_id[200], *pw = (char *)"untouched";

    (void)state;
    /* no credential yet */
    assert_int_equal(prov_client_hub_password(c, "d", &pw), PROV_EINVAL);
    assert_null(pw);
    assert_non_null(strstr(last_error, "no credential"));
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_client_hub_password(c, "", &pw), PROV_EINVAL);
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_int_equal(prov_client_hub_password(c, long_id, &pw), PROV_EINVAL);
    assert_null(pw);
    assert_int_equal(prov_client_hub_password(c, NULL, &pw), PROV_EINVAL);
    assert_int_equal(prov_client_hub_password(c, "d", NULL), PROV_EINVAL);
    assert_int_equal(prov_client_hub_password(NULL, "d", &pw), PROV_EINVAL);
    prov_client_free(c);
}

static void test_tpm_over_mqtt_refused(void **state)
{
    struct prov_client *c = new_client(PROV_TRANSPORT_MQTT);
    struct prov_result *res = NULL;

    (void)state;
    /* refused before the TCTI is opened: a dead one gives EINVAL, not EIO */
    assert_int_equal(prov_client_set_tpm(c, DEAD_TCTI), PROV_EINVAL);
    assert_non_null(strstr(last_error, "HTTPS only"));
    /* the client got no credential */
    assert_int_equal(prov_register(c, &res), PROV_EINVAL);
    assert_null(res);
    prov_client_free(c);
}

static void test_tpm_after_key_refused(void **state)
{
    struct prov_client *c = new_client(PROV_TRANSPORT_HTTPS);

    (void)state;
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    assert_int_equal(prov_client_set_tpm(c, DEAD_TCTI), PROV_EINVAL);
    assert_non_null(strstr(last_error, "one credential kind"));
    assert_int_equal(prov_client_set_tpm(NULL, DEAD_TCTI), PROV_EINVAL);
    prov_client_free(c);
}

static void test_tpm_unreachable(void **state)
{
    struct prov_client *c = new_client(PROV_TRANSPORT_HTTPS);
    struct prov_result *res = NULL;
    char *pw = NULL;

    (void)state;
    assert_int_equal(prov_client_set_tpm(c, DEAD_TCTI), PROV_EIO);
    assert_non_null(strstr(last_error, "TPM: cannot open TCTI '" DEAD_TCTI "'"));
    /* still no credential: a key may be set instead */
    assert_int_equal(prov_register(c, &res), PROV_EINVAL);
    assert_int_equal(prov_client_hub_password(c, "d", &pw), PROV_EINVAL);
    assert_int_equal(prov_client_set_symmetric_key(c, KEY), 0);
    prov_client_free(c);

    /* a TCTI module that does not exist */
    c = new_client(PROV_TRANSPORT_HTTPS);
    assert_int_equal(prov_client_set_tpm(c, "nosuchtcti:x"), PROV_EIO);
    prov_client_free(c);
}

static void test_tpm_identity_unreachable(void **state)
{
    char *id = (char *)"x", *ek = (char *)"x", *srk = (char *)"x", *cert = (char *)"x";

    (void)state;
    assert_int_equal(prov_tpm_identity(DEAD_TCTI, &id, &ek, &srk, &cert), PROV_EIO);
    assert_null(id);
    assert_null(ek);
    assert_null(srk);
    assert_null(cert);
    assert_int_equal(prov_tpm_identity(DEAD_TCTI, NULL, NULL, NULL, NULL), PROV_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hub_password_symmetric_key),
        cmocka_unit_test(test_hub_password_group_key),
        cmocka_unit_test(test_hub_password_bad_arguments),
        cmocka_unit_test(test_tpm_over_mqtt_refused),
        cmocka_unit_test(test_tpm_after_key_refused),
        cmocka_unit_test(test_tpm_unreachable),
        cmocka_unit_test(test_tpm_identity_unreachable),
    };

    /* tpm2-tss's own error lines about the dead TCTI would clutter the output */
    setenv("TSS2_LOG", "all+none", 1);
    prov_set_log_callback(on_log, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
