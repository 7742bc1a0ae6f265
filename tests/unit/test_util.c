/*
 * Unit tests for src/common/util.c and errors.c: base64, percent-decoding,
 * identifiers, integer parsing, constant-time compare, UUIDs and time text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "src/common/errors.h"
#include "src/common/util.h"

/* RFC 4648 section 10 test vectors. */
static const struct {
    const char *plain;
    const char *b64;
} b64_vectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_b64_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(b64_vectors); i++) {
        const char *plain = b64_vectors[i].plain;
        const char *b64 = b64_vectors[i].b64;
        char enc[16];
        uint8_t dec[16];
        char *heap;
        int n;

        assert_int_equal(b64_encoded_len(strlen(plain)), strlen(b64));
        b64_encode((const uint8_t *)plain, strlen(plain), enc);
        assert_string_equal(enc, b64);
        heap = b64_encode_alloc((const uint8_t *)plain, strlen(plain));
        assert_non_null(heap);
        assert_string_equal(heap, b64);
        free(heap);
        assert_true(b64_decoded_max(strlen(b64)) <= sizeof(dec));
        n = b64_decode(b64, strlen(b64), dec);
        assert_int_equal(n, (int)strlen(plain));
        assert_memory_equal(dec, plain, strlen(plain));
    }
}

static void test_b64_binary_round_trip(void **state)
{
    uint8_t in[256], dec[256 + 3];
    char enc[4 * 86 + 1];

    (void)state;
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(255 - i);
    for (size_t len = 0; len <= sizeof(in); len++) {
        int n;

        b64_encode(in, len, enc);
        assert_int_equal(strlen(enc), b64_encoded_len(len));
        n = b64_decode(enc, strlen(enc), dec);
        assert_int_equal(n, (int)len);
        assert_memory_equal(dec, in, len);
    }
}

static void test_b64_rejects_non_canonical(void **state)
{
    static const char *const bad[] = {
        "Zg",        /* missing padding */
        "Zg=",       /* short padding */
        "Zm9",       /* length not a multiple of 4 */
        "Zm9vY",
        "Z===",      /* padding may only fill the last two places */
        "====",
        "=Zm9",
        "Zg=a",      /* data after padding */
        "Zg==Zg==",  /* padding before the end */
        "Zm8=Zm9v",
        "Zm9v!A==",  /* outside the alphabet */
        "Zm 9",      /* whitespace */
        "Zm9v\n",
        "Zm9v\r\nZm9v",
        "-_-_",      /* the URL-safe alphabet is not accepted */
        "Zm9v\x80\x80\x80\x80",
    };
    uint8_t out[32];

    (void)state;
    for (size_t i = 0; i < N(bad); i++) {
        int n = b64_decode(bad[i], strlen(bad[i]), out);

        if (n != PROV_EPROTO)
            fail_msg("b64_decode accepted \"%s\" (returned %d)", bad[i], n);
    }
    /* only len bytes count: a prefix of valid text with a bad length is refused */
    assert_int_equal(b64_decode("Zm9vYg==", 6, out), PROV_EPROTO);
    assert_int_equal(b64_decode("Zm9vYmFy", 7, out), PROV_EPROTO);
    assert_int_equal(b64_decode("Zm9vYmFy", 4, out), 3);
    /* an embedded NUL is not part of the alphabet either */
    assert_int_equal(b64_decode("Zm\0v", 4, out), PROV_EPROTO);
}

static void test_url_decode(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(url_decode("", 0, out, false), 0);
    assert_string_equal(out, "");
    assert_int_equal(url_decode("abc", 3, out, false), 3);
    assert_string_equal(out, "abc");
    /* upper- and lower-case hex, as the SDKs send both */
    assert_int_equal(url_decode("0ne%2Fregistrations%2fdev", 25, out, false), 21);
    assert_string_equal(out, "0ne/registrations/dev");
    assert_int_equal(url_decode("%2b%2B%3d%3D%7e%41", 18, out, false), 6);
    assert_string_equal(out, "++==~A");
    /* '+' is a space only when asked for (query strings) */
    assert_int_equal(url_decode("a+b", 3, out, false), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(url_decode("a+b", 3, out, true), 3);
    assert_string_equal(out, "a b");
    assert_int_equal(url_decode("a%2Bb", 5, out, true), 3);
    assert_string_equal(out, "a+b");
    /* non-ASCII bytes pass through */
    assert_int_equal(url_decode("%C3%A9", 6, out, false), 2);
    assert_string_equal(out, "\xc3\xa9");
    /* only len bytes are read */
    assert_int_equal(url_decode("ab%41cd", 5, out, false), 3);
    assert_string_equal(out, "abA");
}

static void test_url_decode_malformed(void **state)
{
    static const char *const bad[] = {
        "%", "%2", "a%", "ab%4", "%zz", "%g0", "%0g", "%%41", "% 41", "%-1", "%+1", "abc%2",
        "%00", "a%00b", /* an escaped NUL would truncate the string */
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < N(bad); i++) {
        int n = url_decode(bad[i], strlen(bad[i]), out, true);

        if (n != PROV_EPROTO)
            fail_msg("url_decode accepted \"%s\" (returned %d)", bad[i], n);
    }
    /* a raw NUL inside the counted bytes */
    assert_int_equal(url_decode("ab\0cd", 5, out, false), PROV_EPROTO);
    /* an escape cut by len is malformed even if the bytes after it are hex */
    assert_int_equal(url_decode("ab%41", 4, out, false), PROV_EPROTO);
}

static void test_url_encode_round_trip(void **state)
{
    char all[256];
    char dec[256];
    char *enc;

    (void)state;
    enc = url_encode_alloc("0ne00ABC123/registrations/my device~1_a.b-c");
    assert_non_null(enc);
    assert_string_equal(enc, "0ne00ABC123%2Fregistrations%2Fmy%20device~1_a.b-c");
    free(enc);
    enc = url_encode_alloc("");
    assert_non_null(enc);
    assert_string_equal(enc, "");
    free(enc);
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    enc = url_encode_alloc(all);
    assert_non_null(enc);
    assert_int_equal(url_decode(enc, strlen(enc), dec, false), 255);
    assert_memory_equal(dec, all, 256);
    assert_int_equal(url_decode(enc, strlen(enc), dec, true), 255); /* no '+' is produced */
    assert_memory_equal(dec, all, 256);
    free(enc);
}

static void test_hex_encode(void **state)
{
    static const uint8_t in[] = {0x00, 0x01, 0xab, 0xcd, 0xef, 0xff};
    char out[2 * sizeof(in) + 1];

    (void)state;
    hex_encode(in, sizeof(in), out, false);
    assert_string_equal(out, "0001abcdefff");
    hex_encode(in, sizeof(in), out, true);
    assert_string_equal(out, "0001ABCDEFFF");
    hex_encode(in, 0, out, false);
    assert_string_equal(out, "");
}

static void test_id_is_valid(void **state)
{
    static const struct {
        const char *id;
        bool ok;
    } cases[] = {
        {"a", true},
        {"7", true},
        {"my-device-01", true},
        {"My.Device_01:x", true},
        {"sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", true},
        {"ends-with-dash-", true},
        {"dev:1", true},
        {"", false},
        {"ends.", false},
        {"ends_", false},
        {"ends:", false},
        {"has space", false},
        {"slash/inside", false},
        {"percent%2f", false},
        {"plus+", false},
        {"quote'", false},
        {"caf\xc3\xa9", false},
        {"tab\there", false},
        {"-", true},
        {".", false},
    };
    char longid[131];

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        if (id_is_valid(cases[i].id) != cases[i].ok)
            fail_msg("id_is_valid(\"%s\") should be %s", cases[i].id,
                     cases[i].ok ? "true" : "false");
    }
    memset(longid, 'a', sizeof(longid) - 1);
    longid[128] = '\0';
    assert_true(id_is_valid(longid)); /* 128 characters: the maximum */
    longid[128] = 'a';
    longid[129] = '\0';
    assert_false(id_is_valid(longid));
}

static void test_parse_long(void **state)
{
    long v = 12345;

    (void)state;
    assert_int_equal(parse_long("0", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_long("10", 0, 10, &v), 0); /* bounds are inclusive */
    assert_int_equal(v, 10);
    assert_int_equal(parse_long("-5", -5, 5, &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(parse_long("9223372036854775807", 0, __LONG_MAX__, &v), 0);
    assert_true(v == __LONG_MAX__);

    v = 77;
    assert_int_equal(parse_long("11", 0, 10, &v), PROV_EINVAL);
    assert_int_equal(parse_long("-6", -5, 5, &v), PROV_EINVAL);
    assert_int_equal(parse_long("", 0, 10, &v), PROV_EINVAL);
    assert_int_equal(parse_long(NULL, 0, 10, &v), PROV_EINVAL);
    assert_int_equal(parse_long("5x", 0, 10, &v), PROV_EINVAL);
    assert_int_equal(parse_long("5 ", 0, 10, &v), PROV_EINVAL);
    assert_int_equal(parse_long("0x5", 0, 10, &v), PROV_EINVAL);
    assert_int_equal(parse_long("abc", 0, 10, &v), PROV_EINVAL);
    assert_int_equal(parse_long("9223372036854775808", 0, __LONG_MAX__, &v), PROV_EINVAL);
    assert_int_equal(parse_long("-9223372036854775809", -__LONG_MAX__ - 1, 0, &v), PROV_EINVAL);
    assert_int_equal(v, 77); /* untouched on failure */
}

static void test_ct_equal(void **state)
{
    uint8_t a[32], b[32];

    (void)state;
    for (int i = 0; i < 32; i++)
        a[i] = b[i] = (uint8_t)(i * 7);
    assert_true(ct_equal(a, b, sizeof(a)));
    assert_true(ct_equal(a, b, 0));
    b[0] ^= 1;
    assert_false(ct_equal(a, b, sizeof(a)));
    b[0] ^= 1;
    b[31] ^= 0x80;
    assert_false(ct_equal(a, b, sizeof(a)));
    assert_true(ct_equal(a, b, 31));
}

static void check_uuid(const char *u)
{
    assert_int_equal(strlen(u), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            assert_int_equal(u[i], '-');
        } else if (!((u[i] >= '0' && u[i] <= '9') || (u[i] >= 'a' && u[i] <= 'f'))) {
            fail_msg("uuid %s: bad character at %d", u, i);
        }
    }
    assert_int_equal(u[14], '4');                   /* version 4 */
    assert_non_null(strchr("89ab", u[19]));         /* RFC 4122 variant */
}

static void test_uuid(void **state)
{
    char a[37], b[37];

    (void)state;
    assert_int_equal(uuid_v4(a), 0);
    assert_int_equal(uuid_v4(b), 0);
    check_uuid(a);
    check_uuid(b);
    assert_string_not_equal(a, b);
}

static void test_random_bytes(void **state)
{
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};

    (void)state;
    assert_int_equal(random_bytes(a, sizeof(a)), 0);
    assert_int_equal(random_bytes(b, sizeof(b)), 0);
    assert_memory_not_equal(a, zero, sizeof(a));
    assert_memory_not_equal(a, b, sizeof(a));
}

static void test_time_format(void **state)
{
    char out[32];

    (void)state;
    time_format_rfc3339(0, 0, out, sizeof(out));
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    time_format_rfc3339(1795981836, 660, out, sizeof(out));
    assert_string_equal(out, "2026-11-29T19:50:36.660Z");
    time_format_rfc3339(951782400, 7, out, sizeof(out)); /* leap day, padded ms */
    assert_string_equal(out, "2000-02-29T00:00:00.007Z");
    time_format_rfc3339(4102444799, 999, out, sizeof(out));
    assert_string_equal(out, "2099-12-31T23:59:59.999Z");
}

static void test_time_now(void **state)
{
    char out[32];
    struct tm tm = {0};
    time_t before, after, t;
    char *end;

    (void)state;
    before = time(NULL);
    time_now_rfc3339(out, sizeof(out));
    after = time(NULL);
    assert_int_equal(strlen(out), 24);
    assert_int_equal(out[23], 'Z');
    assert_int_equal(out[19], '.');
    end = strptime(out, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(end);
    assert_ptr_equal(end, out + 19);
    t = timegm(&tm);
    assert_true(t >= before && t <= after);
}

static void test_string_helpers(void **state)
{
    char s[] = "MiXeD-Case_09";

    (void)state;
    assert_true(str_ieq("EnrollmentGroups", "enrollmentgroups"));
    assert_true(str_ieq("", ""));
    assert_false(str_ieq("abc", "abcd"));
    assert_false(str_ieq("abcd", "abc"));
    assert_false(str_ieq("abc", "abd"));
    assert_true(str_ieqn("SRx", "sry", 2));
    assert_false(str_ieqn("SRx", "sty", 2));
    assert_true(str_ieqn("ab", "AB", 5)); /* stops at the common NUL */
    assert_false(str_ieqn("ab", "ABC", 5));
    str_lower(s);
    assert_string_equal(s, "mixed-case_09");
}

static void test_wipe(void **state)
{
    uint8_t buf[16];
    uint8_t zero[16] = {0};
    uint8_t *heap = malloc(16);

    (void)state;
    memset(buf, 0xa5, sizeof(buf));
    prov_cleanse(buf, sizeof(buf));
    assert_memory_equal(buf, zero, sizeof(buf));
    prov_cleanse(NULL, 16);
    assert_non_null(heap);
    memset(heap, 0x5a, 16);
    prov_freezero(heap, 16); /* ASan reports a bad free or leak here */
    prov_freezero(NULL, 16);
}

static void test_errors(void **state)
{
    (void)state;
    assert_string_equal(prov_err_name(0), "OK");
    assert_string_equal(prov_err_name(PROV_EINVAL), "EINVAL");
    assert_string_equal(prov_err_name(PROV_EDISABLED), "EDISABLED");
    assert_string_equal(prov_strerror(PROV_ENOMEM), "out of memory");
    assert_string_equal(prov_strerror(PROV_EPROTO), "malformed peer data");
    assert_string_equal(prov_strerror(-999), "unknown error");
    assert_string_equal(prov_err_name(5), "EUNKNOWN");
    for (int e = PROV_EDISABLED; e <= PROV_ENOMEM; e++)
        assert_string_not_equal(prov_strerror(e), "unknown error");
}

static void test_buf_append_capped(void **state)
{
    char *data = NULL;
    size_t len = 0, cap = 0;
    char big[3000];

    (void)state;
    memset(big, 'x', sizeof(big));
    assert_int_equal(buf_append_capped(&data, &len, &cap, "ab", 2, 10), 0);
    assert_int_equal(buf_append_capped(&data, &len, &cap, "", 0, 10), 0);
    assert_string_equal(data, "ab");
    /* exactly the cap fits; one byte more is refused and leaves the buffer as it was */
    assert_int_equal(buf_append_capped(&data, &len, &cap, "cdefghij", 8, 10), 0);
    assert_int_equal(len, 10);
    assert_int_equal(buf_append_capped(&data, &len, &cap, "k", 1, 10), PROV_ELIMIT);
    assert_string_equal(data, "abcdefghij");
    /* growth past the first allocation keeps the bytes and the terminator */
    assert_int_equal(buf_append_capped(&data, &len, &cap, big, sizeof(big), 10000), 0);
    assert_int_equal(len, 10 + sizeof(big));
    assert_true(cap > len);
    assert_int_equal(data[len], '\0');
    assert_int_equal(memcmp(data, "abcdefghijxxx", 13), 0);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_vectors),
        cmocka_unit_test(test_b64_binary_round_trip),
        cmocka_unit_test(test_b64_rejects_non_canonical),
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_url_decode_malformed),
        cmocka_unit_test(test_url_encode_round_trip),
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_id_is_valid),
        cmocka_unit_test(test_parse_long),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_time_now),
        cmocka_unit_test(test_string_helpers),
        cmocka_unit_test(test_wipe),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_buf_append_capped),
    };

    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
