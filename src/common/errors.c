#include "errors.h"

const char *prov_strerror(int err)
{
    switch (err) {
    case PROV_OK:
        return "success";
#define XX(name, val, msg) \
    case PROV_E##name:     \
        return msg;
        PROV_ERRNO_MAP(XX)
#undef XX
    }
    return "unknown error";
}

const char *prov_err_name(int err)
{
    switch (err) {
    case PROV_OK:
        return "OK";
#define XX(name, val, msg) \
    case PROV_E##name:     \
        return "E" #name;
        PROV_ERRNO_MAP(XX)
#undef XX
    }
    return "EUNKNOWN";
}
