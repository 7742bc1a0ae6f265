/*
 * Unit tests for src/common/sas.c: SAS token parsing and checking with the
 * device-protocol test vectors (§4.1), the service-API vector (§3.3), group key
 * derivation (device-protocol §4.2, service-API §9.1) and sas_build.
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
#include "src/common/limits.h"
#include "src/common/sas.h"
#include "src/common/util.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* device-protocol §4.1: one key, one expiry, four spellings of sr */
#define DEV_KEY "dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleTEyMzQ="
#define DEV_SE "1795981836"
/* vector 1's fields as Node sends them */
#define SIG_OK "sig=7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ffw%3D"
#define SR_OK "sr=0ne00ABC123/registrations/my-device-01"

static const struct {
    const char *sr_raw;
    const char *sr_decoded;
    const char *sig_b64;
} dev_vectors[] = {
    {"0ne00ABC123/registrations/my-device-01", "0ne00ABC123/registrations/my-device-01",
     "7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR/fw="},
    {"0ne00ABC123%2fregistrations%2fmy-device-01", "0ne00ABC123/registrations/my-device-01",
     "JCpQbitp8YKzOt/j2RbUj49bJJ8Xx3OMBJFG8MsTEPU="},
    {"0ne00ABC123%2Fregistrations%2Fmy-device-01", "0ne00ABC123/registrations/my-device-01",
     "oqi2QJwzX8V3DgKxrY8GCROplNUg75H16uMUZr+nLtg="},
    {"0ne00abc123/registrations/my-device-01", "0ne00abc123/registrations/my-device-01",
     "j4CmbXgbEB9C/PRn3+MKdBx5+qrqwMfLJahGT+N89Rk="},
};

/* The ways clients escape sig: upper-case, lower-case, not at all. */
static void escape_sig(const char *b64, int style, char *out, size_t outlen)
{
    size_t o = 0;

    for (const char *p = b64; *p && o + 4 < outlen; p++) {
        const char *esc = NULL;

        if (style != 2) {
            if (*p == '+')
                esc = style == 0 ? "%2B" : "%2b";
            else if (*p == '/')
                esc = style == 0 ? "%2F" : "%2f";
            else if (*p == '=')
                esc = style == 0 ? "%3D" : "%3d";
        }
        if (esc != NULL) {
            memcpy(out + o, esc, 3);
            o += 3;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void decode_key(const char *b64, uint8_t *key, size_t *len)
{
    int n = b64_decode(b64, strlen(b64), key);

    assert_true(n > 0);
    *len = (size_t)n;
}

static void test_compute_vectors(void **state)
{
    uint8_t key[64], mac[32], want[35];
    size_t keylen;

    (void)state;
    decode_key(DEV_KEY, key, &keylen);
    assert_int_equal(keylen, 32);
    for (size_t i = 0; i < N(dev_vectors); i++) {
        assert_int_equal(sas_compute(key, keylen, dev_vectors[i].sr_raw, DEV_SE, mac), 0);
        assert_int_equal(b64_decode(dev_vectors[i].sig_b64, 44, want), 32);
        assert_memory_equal(mac, want, 32);
    }
}

/* Every vector, every sig escaping, with and without skn, in each field order. */
static void test_parse_and_check_vectors(void **state)
{
    static const char *const orders[] = {
        "sr=%s&sig=%s&se=%s&skn=registration", /* C SDK, C#, Node TPM */
        "sr=%s&sig=%s&skn=registration&se=%s", /* Node symmetric key */
        "sr=%s&sig=%s&se=%s",                  /* Python, Embedded C */
    };
    uint8_t key[64];
    size_t keylen;

    (void)state;
    decode_key(DEV_KEY, key, &keylen);
    for (size_t v = 0; v < N(dev_vectors); v++) {
        for (int style = 0; style < 3; style++) {
            for (size_t o = 0; o < N(orders); o++) {
                char sig[128], fields[512], header[600];
                struct sas_token tok;
                const char *why = NULL;
                uint8_t other[32];

                escape_sig(dev_vectors[v].sig_b64, style, sig, sizeof(sig));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
                snprintf(fields, sizeof(fields), orders[o], dev_vectors[v].sr_raw, sig, DEV_SE);
#pragma GCC diagnostic pop
                snprintf(header, sizeof(header), "SharedAccessSignature %s", fields);
                if (sas_parse(header, &tok, &why) != 0)
                    fail_msg("sas_parse(%s): %s", header, why);
                assert_string_equal(tok.sr_raw, dev_vectors[v].sr_raw);
                assert_string_equal(tok.sr, dev_vectors[v].sr_decoded);
                assert_string_equal(tok.se_raw, DEV_SE);
                assert_true(tok.se == 1795981836LL);
                assert_int_equal(tok.has_skn, o != 2);
                assert_string_equal(tok.skn, o != 2 ? "registration" : "");
                if (!sas_check_key(&tok, key, keylen))
                    fail_msg("signature rejected: %s", header);
                assert_true(sas_check_b64_key(&tok, DEV_KEY));
                /* the wrong key, and the right key cut short, are refused */
                memcpy(other, key, 32);
                other[31] ^= 1;
                assert_false(sas_check_key(&tok, other, 32));
                assert_false(sas_check_key(&tok, key, 31));
            }
        }
    }
}

/* A signature is bound to the exact sr and se bytes. */
static void test_check_binds_sr_and_se(void **state)
{
    struct sas_token tok;
    const char *why;
    uint8_t key[64];
    size_t keylen;

    (void)state;
    decode_key(DEV_KEY, key, &keylen);
    /* vector 1's signature presented with vector 3's sr spelling */
    assert_int_equal(sas_parse("SharedAccessSignature sr=0ne00ABC123%2Fregistrations%2Fmy-device-01"
                               "&" SIG_OK "&se=1795981836",
                               &tok, &why),
                     0);
    assert_false(sas_check_key(&tok, key, keylen));
    /* a later expiry with the original signature */
    assert_int_equal(sas_parse("SharedAccessSignature sr=0ne00ABC123/registrations/my-device-01"
                               "&" SIG_OK "&se=1795981837",
                               &tok, &why),
                     0);
    assert_false(sas_check_key(&tok, key, keylen));
    /* one flipped signature bit */
    assert_int_equal(sas_parse("SharedAccessSignature sr=0ne00ABC123/registrations/my-device-01"
                               "&" SIG_OK "&se=1795981836",
                               &tok, &why),
                     0);
    assert_true(sas_check_key(&tok, key, keylen));
    for (size_t i = 0; i < sizeof(tok.sig); i++) {
        tok.sig[i] ^= 0x40;
        assert_false(sas_check_key(&tok, key, keylen));
        tok.sig[i] ^= 0x40;
    }
    assert_true(sas_check_key(&tok, key, keylen));
    /* undecodable or empty base64 keys */
    assert_false(sas_check_b64_key(&tok, "not base64!"));
    assert_false(sas_check_b64_key(&tok, ""));
    assert_false(sas_check_b64_key(&tok, NULL));
}

/* service-API §3.3: Node's order sr, sig, skn, se and a policy name */
static void test_service_vector(void **state)
{
    struct sas_token tok;
    const char *why = NULL;

    (void)state;
    assert_int_equal(sas_parse("SharedAccessSignature sr=localhost"
                               "&sig=gqZtnEfXGusua%2BqjDqm%2Fp8pSMUwKz9scRb2I82ZwpwU%3D"
                               "&skn=provisioningserviceowner&se=1795981266",
                               &tok, &why),
                     0);
    assert_string_equal(tok.sr_raw, "localhost");
    assert_string_equal(tok.skn, "provisioningserviceowner");
    assert_true(tok.has_skn);
    assert_true(tok.se == 1795981266LL);
    assert_true(sas_check_b64_key(&tok, "llbXt1AZ5RELJWOjp9Xm42MrmYYU6X6st66vl5mHb9Y="));
    assert_false(sas_check_b64_key(&tok, DEV_KEY));
}

static void test_field_variants(void **state)
{
    static const char *const good[] = {
        /* reversed order */
        "SharedAccessSignature skn=registration&se=1795981836"
        "&sig=7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ffw%3D"
        "&sr=0ne00ABC123/registrations/my-device-01",
        /* field names in any case */
        "SharedAccessSignature SR=0ne00ABC123/registrations/my-device-01"
        "&Sig=7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ffw%3D&sE=1795981836&SKN=registration",
        /* unknown fields are ignored, extra blanks before the fields are skipped */
        "  SharedAccessSignature   sr=0ne00ABC123/registrations/my-device-01&foo=bar"
        "&sig=7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ffw%3D&se=1795981836&x=",
    };
    uint8_t key[64];
    size_t keylen;

    (void)state;
    decode_key(DEV_KEY, key, &keylen);
    for (size_t i = 0; i < N(good); i++) {
        struct sas_token tok;
        const char *why = NULL;

        if (sas_parse(good[i], &tok, &why) != 0)
            fail_msg("sas_parse(%s): %s", good[i], why);
        assert_string_equal(tok.sr_raw, "0ne00ABC123/registrations/my-device-01");
        assert_true(sas_check_key(&tok, key, keylen));
    }
}

static void test_skn(void **state)
{
    struct sas_token tok;
    const char *why;

    (void)state;
    /* skn is percent-decoded */
    assert_int_equal(sas_parse("SharedAccessSignature sr=h&sig=7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof"
                               "02sR%2Ffw%3D&se=1&skn=my%20policy",
                               &tok, &why),
                     0);
    assert_true(tok.has_skn);
    assert_string_equal(tok.skn, "my policy");
    /* an empty skn is present but empty */
    assert_int_equal(sas_parse("SharedAccessSignature sr=h&sig=7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof"
                               "02sR%2Ffw%3D&se=1&skn=",
                               &tok, &why),
                     0);
    assert_true(tok.has_skn);
    assert_string_equal(tok.skn, "");
}

static void expect_reject(const char *header, const char *why_part)
{
    struct sas_token tok;
    const char *why = NULL;
    int r = sas_parse(header, &tok, &why);

    if (r != PROV_EPROTO)
        fail_msg("sas_parse accepted \"%s\" (%d)", header ? header : "(null)", r);
    assert_non_null(why);
    if (why_part != NULL && strstr(why, why_part) == NULL)
        fail_msg("sas_parse(\"%s\"): reason \"%s\" does not mention \"%s\"", header, why,
                 why_part);
}


static void test_missing_and_bad_fields(void **state)
{
    char big[PROV_MAX_SAS_TOKEN + 64];
    char longsr[700];
    struct sas_token tok;

    (void)state;
    expect_reject(NULL, NULL);
    expect_reject("", "scheme");
    expect_reject("Bearer abc", "scheme");
    expect_reject("sharedaccesssignature " SR_OK "&" SIG_OK "&se=1", "scheme");
    expect_reject("SharedAccessSignature" SR_OK "&" SIG_OK "&se=1", "scheme");
    expect_reject("SharedAccessSignature", "scheme");
    expect_reject("SharedAccessSignature ", "no sr");
    expect_reject("SharedAccessSignature " SIG_OK "&se=1", "no sr");
    expect_reject("SharedAccessSignature " SR_OK "&se=1&skn=registration", "no sig");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK, "no se");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&skn=registration", "no se");
    /* fields without '=', empty fields */
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se", "malformed");
    expect_reject("SharedAccessSignature " SR_OK "&&" SIG_OK "&se=1", "malformed");
    /* duplicates */
    expect_reject("SharedAccessSignature " SR_OK "&" SR_OK "&" SIG_OK "&se=1", "sr");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&" SIG_OK "&se=1", "sig");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=1&se=2", "se");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=1&skn=a&skn=b", "skn");
    /* se must be a plain non-negative decimal of at most 18 digits */
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=", "se");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=-1", "se");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=12a", "se");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=1.5", "se");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=%2B1", "se");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=1234567890123456789", "se");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=99999999999999999999999", "se");
    /* malformed escapes */
    expect_reject("SharedAccessSignature sr=0ne%2&" SIG_OK "&se=1", "sr");
    expect_reject("SharedAccessSignature sr=0ne%00x&" SIG_OK "&se=1", "sr");
    expect_reject("SharedAccessSignature " SR_OK "&" SIG_OK "&se=1&skn=%zz", "skn");
    /* sr longer than the token struct holds */
    memset(longsr, 'a', sizeof(longsr));
    memcpy(longsr, "SharedAccessSignature sr=", 25);
    snprintf(longsr + 600, sizeof(longsr) - 600, "&%s&se=1", SIG_OK);
    expect_reject(longsr, "sr");
    /* an over-long header */
    memset(big, 'a', sizeof(big));
    snprintf(big, sizeof(big), "SharedAccessSignature %s&%s&se=1&x=", SR_OK, SIG_OK);
    big[strlen(big)] = 'a';
    big[PROV_MAX_SAS_TOKEN + 1] = '\0';
    expect_reject(big, "too long");
    /* the same header at exactly the limit is parsed */
    big[PROV_MAX_SAS_TOKEN] = '\0';
    assert_int_equal(sas_parse(big, &tok, NULL), 0);
}

static void test_bad_sig_length(void **state)
{
    static const char *const sigs[] = {
        "",
        "AAAA",                                               /* 3 bytes */
        "7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ff%3D%3D", /* 31 bytes */
        "7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2FfwAA",    /* 33 bytes */
        "7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ffw",      /* unpadded */
        "7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR_fw%3D",     /* URL-safe alphabet */
        "7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ffw%3",    /* bad escape */
        ("7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ffw%3D7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR"
         "%2Ffw%3D7tRIc1Pk0biiPwb2cKF7t5iFQ4fl5FShVxof02sR%2Ffw%3D"), /* far too long */
    };

    (void)state;
    for (size_t i = 0; i < N(sigs); i++) {
        char header[512];

        snprintf(header, sizeof(header), "SharedAccessSignature %s&sig=%s&se=1", SR_OK, sigs[i]);
        expect_reject(header, "sig");
    }
}

static void test_derive_vectors(void **state)
{
    static const struct {
        const char *group_key;
        const char *registration_id;
        const char *derived;
    } v[] = {
        /* device-protocol §4.2 */
        {DEV_KEY, "my-device-01", "gnux+XH2snPHbAtAEL2G7i2fdltewR+PV0cVHVydVH0="},
        /* service-API §9.1 */
        {"8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
         "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="},
        {"oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==",
         "breakroom499-contoso-tstrsd-007", "JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs="},
        {"oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==",
         "mainbuilding167-contoso-hpsd-088", "6uejA9PfkQgmYylj8Zerp3kcbeVrGZ172YLa7VSnJzg="},
    };

    (void)state;
    for (size_t i = 0; i < N(v); i++) {
        char out[45];
        uint8_t key[80], raw[32], want[35];
        size_t keylen;

        assert_int_equal(derive_device_key(v[i].group_key, v[i].registration_id, out), 0);
        assert_string_equal(out, v[i].derived);
        decode_key(v[i].group_key, key, &keylen);
        assert_int_equal(derive_device_key_raw(key, keylen, v[i].registration_id, raw), 0);
        assert_int_equal(b64_decode(v[i].derived, 44, want), 32);
        assert_memory_equal(raw, want, 32);
    }
}

static void test_derive_bad_key(void **state)
{
    char out[45];
    char huge[400];

    (void)state;
    assert_int_equal(derive_device_key("not base64!", "dev", out), PROV_EINVAL);
    assert_int_equal(derive_device_key("", "dev", out), PROV_EINVAL);
    assert_int_equal(derive_device_key("abc", "dev", out), PROV_EINVAL);
    memset(huge, 'A', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    assert_int_equal(derive_device_key(huge, "dev", out), PROV_EINVAL);
}

static void test_build_round_trip(void **state)
{
    struct sas_token tok;
    const char *why = NULL;
    char *t;

    (void)state;
    /* sas_build encodes sr with upper-case hex, which is vector 3 */
    t = sas_build("0ne00ABC123/registrations/my-device-01", DEV_KEY, "registration", 1795981836);
    assert_non_null(t);
    assert_string_equal(t, "SharedAccessSignature sr=0ne00ABC123%2Fregistrations%2Fmy-device-01"
                           "&sig=oqi2QJwzX8V3DgKxrY8GCROplNUg75H16uMUZr%2BnLtg%3D"
                           "&se=1795981836&skn=registration");
    assert_int_equal(sas_parse(t, &tok, &why), 0);
    assert_string_equal(tok.sr, "0ne00ABC123/registrations/my-device-01");
    assert_true(sas_check_b64_key(&tok, DEV_KEY));
    free(t);

    /* without skn, with a service policy key */
    t = sas_build("localhost", "llbXt1AZ5RELJWOjp9Xm42MrmYYU6X6st66vl5mHb9Y=", NULL, 1795981266);
    assert_non_null(t);
    assert_string_equal(t, "SharedAccessSignature sr=localhost"
                           "&sig=gqZtnEfXGusua%2BqjDqm%2Fp8pSMUwKz9scRb2I82ZwpwU%3D"
                           "&se=1795981266");
    assert_int_equal(sas_parse(t, &tok, &why), 0);
    assert_false(tok.has_skn);
    assert_true(sas_check_b64_key(&tok, "llbXt1AZ5RELJWOjp9Xm42MrmYYU6X6st66vl5mHb9Y="));
    free(t);

    /* resources needing escapes survive the round trip */
    t = sas_build("scope/registrations/a b&c=d", DEV_KEY, "registration", 42);
    assert_non_null(t);
    assert_int_equal(sas_parse(t, &tok, &why), 0);
    assert_string_equal(tok.sr, "scope/registrations/a b&c=d");
    assert_true(tok.se == 42);
    assert_true(sas_check_b64_key(&tok, DEV_KEY));
    free(t);

    /* a bad key gives no token */
    assert_null(sas_build("x", "not base64!", NULL, 1));
    assert_null(sas_build("x", "", NULL, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compute_vectors),
        cmocka_unit_test(test_parse_and_check_vectors),
        cmocka_unit_test(test_check_binds_sr_and_se),
        cmocka_unit_test(test_service_vector),
        cmocka_unit_test(test_field_variants),
        cmocka_unit_test(test_skn),
        cmocka_unit_test(test_missing_and_bad_fields),
        cmocka_unit_test(test_bad_sig_length),
        cmocka_unit_test(test_derive_vectors),
        cmocka_unit_test(test_derive_bad_key),
        cmocka_unit_test(test_build_round_trip),
    };

    return cmocka_run_group_tests_name("sas", tests, NULL, NULL);
}
