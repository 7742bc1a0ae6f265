/* prov-bench enroll: individual enrollments through the service API's bulk operation. */
#ifndef PROV_BENCH_ENROLL_H
#define PROV_BENCH_ENROLL_H

#include <stdbool.h>

#include "bench.h"

struct enroll_opts {
    const char *policy_name;
    const char *policy_key_b64;
    unsigned batch; /* 0: as many as fit in one request body */
    bool update;    /* bulk mode "update" instead of "create" */
};

/* Runs the subcommand; the process exit status. */
int enroll_main(const struct bench_opts *o, const struct enroll_opts *e);

#endif
