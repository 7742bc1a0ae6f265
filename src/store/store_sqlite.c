/* placeholder until the SQLite backend lands */
#include "store.h"
#include "../common/errors.h"
#include <stdio.h>

int store_sqlite_open(const char *path, struct store **out, char *err, size_t errlen)
{
    (void)path;
    *out = NULL;
    snprintf(err, errlen, "sqlite store not built yet");
    return PROV_ESTORE;
}
