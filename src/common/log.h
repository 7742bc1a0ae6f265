/*
 * One stderr line per event: "ts level module msg". The level is tested before
 * the arguments are evaluated. Never log secrets (keys, signatures, tokens).
 */
#ifndef PROV_COMMON_LOG_H
#define PROV_COMMON_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern int log_current_level;

void log_set_level(enum log_level level);
/* Parses "error|warn|info|debug"; returns 0 or PROV_EINVAL. */
int log_parse_level(const char *s, enum log_level *out);
void log_write(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define plog(level, ...)                                   \
    do {                                                   \
        if ((int)(level) <= log_current_level)             \
            log_write((level), LOG_MODULE, __VA_ARGS__);   \
    } while (0)

#endif
