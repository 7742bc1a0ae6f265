/*
 * The public error codes in prov/prov.h are the project's codes from
 * src/common/errors.h. lib.h includes errors.h first, so prov.h's own enum is
 * skipped here and these assertions compare the public list with the real one.
 */
#include <stdlib.h>

#include "lib.h"

#define PROV_CHECK_PUBLIC_(name, val) \
    _Static_assert(PROV_E##name == (val), "PROV_E" #name " differs from src/common/errors.h");
PROV_ERROR_MAP(PROV_CHECK_PUBLIC_)
#undef PROV_CHECK_PUBLIC_

/* Same number of codes on both sides, so no internal code is missing publicly. */
#define PROV_COUNT_PUBLIC_(name, val) +1
#define PROV_COUNT_INTERNAL_(name, val, msg) +1
_Static_assert(0 PROV_ERROR_MAP(PROV_COUNT_PUBLIC_) == 0 PROV_ERRNO_MAP(PROV_COUNT_INTERNAL_),
               "prov.h and src/common/errors.h list different error codes");
#undef PROV_COUNT_PUBLIC_
#undef PROV_COUNT_INTERNAL_

/* prov_strerror() itself is src/common/errors.c, exported by the version script. */

void prov_free(void *p)
{
    free(p);
}
