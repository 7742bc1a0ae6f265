/* The library's only output channel: the user's log callback. */
#include <stdarg.h>
#include <stdio.h>

#include "../common/log.h"
#include "lib.h"

/* The public levels are the project's log levels. */
_Static_assert(PROV_LOG_ERROR == (int)LOG_ERROR && PROV_LOG_WARN == (int)LOG_WARN &&
                   PROV_LOG_INFO == (int)LOG_INFO && PROV_LOG_DEBUG == (int)LOG_DEBUG,
               "public log levels differ from src/common/log.h");

static prov_log_fn log_cb;
static void *log_arg;

void prov_set_log_callback(prov_log_fn cb, void *arg)
{
    log_cb = cb;
    log_arg = arg;
}

void lib_log(int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (log_cb == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_cb(level, msg, log_arg);
}
