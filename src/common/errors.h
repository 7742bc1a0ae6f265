/*
 * provd internal error codes: 0 is success, a negative PROV_E* is a failure.
 * One X-macro list generates the codes and their names (libuv's pattern).
 */
#ifndef PROV_COMMON_ERRORS_H
#define PROV_COMMON_ERRORS_H

#define PROV_ERRNO_MAP(XX)                                  \
    XX(NOMEM, -1, "out of memory")                          \
    XX(INVAL, -2, "invalid argument")                       \
    XX(IO, -3, "i/o error")                                 \
    XX(TIMEOUT, -4, "timed out")                            \
    XX(AGAIN, -5, "try again")                              \
    XX(PROTO, -6, "malformed peer data")                    \
    XX(TLS, -7, "tls error")                                \
    XX(CRYPTO, -8, "cryptographic error")                   \
    XX(AUTH, -9, "authentication refused")                  \
    XX(NOTFOUND, -10, "not found")                          \
    XX(EXISTS, -11, "already exists")                       \
    XX(STORE, -12, "store error")                           \
    XX(LIMIT, -13, "limit exceeded")                        \
    XX(INTERNAL, -14, "internal error")                     \
    XX(PRECONDITION, -15, "precondition failed")            \
    XX(DISABLED, -16, "disabled")                           \
    XX(CONFLICT, -17, "conflicts with another entry")

enum prov_err {
    PROV_OK = 0,
#define XX(name, val, msg) PROV_E##name = (val),
    PROV_ERRNO_MAP(XX)
#undef XX
};

/* Static strings, never NULL. */
const char *prov_strerror(int err);
const char *prov_err_name(int err);

#endif
