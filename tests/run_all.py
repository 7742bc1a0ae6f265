#!/usr/bin/env python3
"""Runs every provd test suite and prints one summary line.

Suites, in order:
  unit (build)       tests/unit binaries of the gcc build
  unit (build-san)   the same binaries built with ASan + UBSan
  system             tests/system/t[0-9]*.sh, then node --test tests/system/node/*.test.js,
                     against the build-san binaries (and the node files again with every
                     --also-node binary of another major version)
  fuzz               a short libFuzzer run of every build-fuzz/fuzz/fuzz_* over its corpus

Every test program prints TAP on stdout. Counting rules (docs/development.md):
  * a result line "ok"/"not ok" counts once; "# SKIP" and "# TODO" count as skipped;
  * nested subtests (indented, as node --test prints them) count at the leaves: a
    result that has indented results just before it is a parent and does not
    count, except that a failed parent with no failed child counts as one failure;
  * "1..0 # SKIP why" with no results is one skipped test;
  * a program that exits non-zero without a failed result, dies of a signal, times
    out, prints fewer top-level results than its plan, or bails out, adds one
    failure.
The last line of the output is "N passed, N failed" (", N skipped" when some
were skipped). The exit status is 0 only when nothing failed and something passed.

Python 3 standard library only.
"""

import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_DIR = os.path.join(ROOT, "tests", "system")
FUZZ_DIR = os.path.join(ROOT, "fuzz")
LOG_DIR = os.path.join(ROOT, "build-logs")

UNIT_TIMEOUT = 300
SYSTEM_TIMEOUT = 900
NODE_TIMEOUT = 2400
TAIL_LINES = 40

SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}

RESULT_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<not>not )?ok\b(?P<rest>.*)$")
PLAN_RE = re.compile(r"^(?P<indent>[ \t]*)1\.\.(?P<n>\d+)\s*(?P<rest>.*)$")
DIRECTIVE_RE = re.compile(r"(?<!\\)#\s*(?P<kind>skip|todo)\S*(?P<reason>.*)$", re.IGNORECASE)
BAIL_RE = re.compile(r"^\s*Bail out!(?P<why>.*)$")
YAML_START_RE = re.compile(r"^(?P<indent>[ \t]*)---\s*$")


class Outcome:
    """What one test program produced."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []   # the "not ok" lines, or the harness's reason
        self.note = ""       # shown after the counts
        self.log = ""        # where the full output is
        self.tail = ""       # the end of the output, for failures
        self.seconds = 0.0

    def fail(self, why):
        self.failed += 1
        self.failures.append(why)


def parse_tap(text, out):
    """Counts the TAP results in text into out. Returns (top-level results, plans, bailed)."""
    results = []   # (indent, status, line); status is pass, fail or skip
    counted = []   # parallel to results: did this one count as a failure
    plan = None
    top_results = 0
    bailed = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        i += 1
        m = BAIL_RE.match(line)
        if m:
            bailed = m.group("why").strip() or "bailed out"
            continue
        m = PLAN_RE.match(line)
        if m:
            if len(m.group("indent")) == 0:
                n = int(m.group("n"))
                plan = (plan or 0) + n
                if n == 0 and re.search(r"#\s*skip", m.group("rest"), re.IGNORECASE):
                    out.skipped += 1
                    out.note = m.group("rest").lstrip("# ").strip()
            continue
        m = RESULT_RE.match(line)
        if not m:
            continue
        indent = len(m.group("indent").expandtabs(4))
        d = DIRECTIVE_RE.search(m.group("rest"))
        if d:
            status = "skip"
        elif m.group("not"):
            status = "fail"
        else:
            status = "pass"
        if indent == 0:
            top_results += 1
        # a YAML diagnostic block may follow: never read result lines from it
        if i < len(lines):
            y = YAML_START_RE.match(lines[i])
            if y and len(y.group("indent").expandtabs(4)) > indent:
                end = re.compile(r"^" + re.escape(y.group("indent")) + r"\.\.\.\s*$")
                i += 1
                while i < len(lines) and not end.match(lines[i]):
                    i += 1
                i += 1
        # children are the results right before this one with a deeper indent
        k = len(results) - 1
        child_failed = False
        has_children = False
        while k >= 0 and results[k][0] > indent:
            has_children = True
            child_failed = child_failed or counted[k]
            k -= 1
        results.append((indent, status, line.strip()))
        if has_children:
            counted.append(child_failed or status == "fail")
            if status == "fail" and not child_failed:
                out.fail(line.strip())
            continue
        counted.append(status == "fail")
        if status == "pass":
            out.passed += 1
        elif status == "skip":
            out.skipped += 1
        else:
            out.fail(line.strip())
    return top_results, plan, bailed


def tail(path, n=TAIL_LINES):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:])


def kill_group(proc):
    """Ends whatever is left of a test's process group (servers it started)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.time() + 5
        while time.time() < deadline:
            proc.poll()  # reap the test itself, so that only live processes remain
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)


def run_program(name, argv, cwd, env, timeout, logbase, tap=True):
    """Runs argv in its own process group, output to files, and parses its TAP."""
    out = Outcome(name)
    os.makedirs(os.path.dirname(logbase), exist_ok=True)
    out_path = logbase + ".out"
    err_path = logbase + ".err"
    out.log = out_path
    start = time.time()
    status = None
    timed_out = False
    with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=fo, stderr=fe, start_new_session=True)
        except OSError as e:
            out.fail("cannot start %s: %s" % (argv[0], e))
            return out
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        kill_group(proc)
        if timed_out:
            status = proc.wait()
    out.seconds = time.time() - start
    with open(out_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    if tap:
        top, plan, bailed = parse_tap(text, out)
        if timed_out:
            out.fail("timed out after %d s" % timeout)
        elif status < 0:
            out.fail("killed by signal %s" % signal.Signals(-status).name)
        elif bailed is not None:
            out.fail("bail out: %s" % bailed)
        elif plan is not None and top < plan:
            out.fail("planned %d tests, saw %d (exit status %d)" % (plan, top, status))
        elif status != 0 and out.failed == 0:
            out.fail("exit status %d without a failed test" % status)
        elif out.passed + out.failed + out.skipped == 0:
            out.fail("no TAP results")
    else:
        if timed_out:
            out.fail("timed out after %d s" % timeout)
        elif status != 0:
            out.fail("exit status %d" % status)
        else:
            out.passed += 1
    if out.failed:
        t_out = tail(out_path)
        t_err = tail(err_path)
        parts = []
        if t_out:
            parts.append("--- stdout (end of %s)\n%s" % (out_path, t_out))
        if t_err:
            parts.append("--- stderr (end of %s)\n%s" % (err_path, t_err))
        out.tail = "\n".join(parts)
    return out


class Summary:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.suites = []

    def suite(self, title):
        print("\n== %s ==" % title, flush=True)
        self.suites.append([title, 0, 0, 0])

    def add(self, o):
        self.passed += o.passed
        self.failed += o.failed
        self.skipped += o.skipped
        s = self.suites[-1]
        s[1] += o.passed
        s[2] += o.failed
        s[3] += o.skipped
        counts = "%d passed" % o.passed
        if o.failed:
            counts += ", %d failed" % o.failed
        if o.skipped:
            counts += ", %d skipped" % o.skipped
        if o.note:
            counts += " (%s)" % o.note
        print("%-5s %-34s %-36s %6.1fs" % ("FAIL" if o.failed else "ok", o.name, counts,
                                           o.seconds), flush=True)
        if o.failed:
            for f in o.failures[:20]:
                print("      %s" % f)
            if len(o.failures) > 20:
                print("      ... and %d more" % (len(o.failures) - 20))
            if o.tail:
                print("\n".join("      | " + l for l in o.tail.splitlines()))
            sys.stdout.flush()

    def missing(self, what, why, skip_missing):
        o = Outcome(what)
        if skip_missing:
            o.skipped = 1
            o.note = why
        else:
            o.fail(why)
        self.add(o)


def executables(pattern):
    return sorted(p for p in glob.glob(pattern) if os.path.isfile(p) and os.access(p, os.X_OK))


def wanted(name, args):
    return args.filter is None or args.filter in name


def base_env():
    env = dict(os.environ)
    env.pop("CMOCKA_MESSAGE_OUTPUT", None)
    return env


def unit_jobs(args, summary, build_dir, sanitized):
    """The unit test programs of one build, as (name, argv, cwd, env, logbase) jobs."""
    bdir = os.path.join(ROOT, build_dir)
    if not os.path.isfile(os.path.join(bdir, "build.ninja")):
        return None, "%s is not built (make %s)" % (build_dir, os.path.basename(build_dir))
    env = base_env()
    env["CMOCKA_MESSAGE_OUTPUT"] = "TAP"
    if sanitized:
        env.update(SAN_ENV)
    bins = [b for b in executables(os.path.join(bdir, "tests", "unit", "test_*"))
            if wanted(os.path.basename(b), args)]
    if not bins and args.filter is None:
        return None, "no unit test binaries in %s/tests/unit" % build_dir
    label = os.path.basename(build_dir.rstrip("/"))
    return [(os.path.basename(b), [b], bdir, env,
             os.path.join(LOG_DIR, "unit-" + label, os.path.basename(b))) for b in bins], None


def run_unit(args, summary):
    """Both builds' unit tests, run in parallel (like meson test), reported in order."""
    suites = [(args.build_dir, False), (args.san_dir, True)]
    planned = []
    for build_dir, sanitized in suites:
        jobs, why = unit_jobs(args, summary, build_dir, sanitized)
        planned.append((build_dir, jobs, why))
    workers = max(1, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {}
        for build_dir, jobs, _ in planned:
            for job in jobs or []:
                name, argv, cwd, env, logbase = job
                futures[(build_dir, name)] = pool.submit(run_program, name, argv, cwd, env,
                                                         UNIT_TIMEOUT, logbase)
        for build_dir, jobs, why in planned:
            summary.suite("unit tests (%s)" % build_dir)
            if jobs is None:
                summary.missing(build_dir, why, args.skip_missing and "not built" in why)
                continue
            for job in jobs:
                summary.add(futures[(build_dir, job[0])].result())


def system_env(args):
    env = base_env()
    env["PROVD_SRC"] = ROOT
    env["PROVD_BUILD_DIR"] = os.path.join(ROOT, args.san_dir)
    env.update(SAN_ENV)
    return env


def run_system(args, summary):
    label = args.san_dir
    summary.suite("system tests (%s)" % label)
    bdir = os.path.join(ROOT, args.san_dir)
    scripts = [s for s in executables(os.path.join(SYSTEM_DIR, "t[0-9]*.sh"))
               if wanted(os.path.basename(s), args)]
    node_files = sorted(glob.glob(os.path.join(SYSTEM_DIR, "node", "*.test.js")))
    node_files = [f for f in node_files if wanted(os.path.basename(f), args)]
    if not scripts and not node_files:
        print("(no system tests%s)" % ("" if args.filter is None else " match the filter"))
        return
    if not os.path.isfile(os.path.join(bdir, "build.ninja")):
        summary.missing("system", "%s is not built (make build-san)" % args.san_dir,
                        args.skip_missing)
        return
    env = system_env(args)
    for s in scripts:
        name = os.path.basename(s)
        o = run_program(name, [s], SYSTEM_DIR, env, SYSTEM_TIMEOUT,
                        os.path.join(LOG_DIR, "system", name))
        summary.add(o)
    if node_files:
        node = shutil.which("node")
        rel = [os.path.relpath(f, SYSTEM_DIR) for f in node_files]
        name = "node --test (%d file%s)" % (len(rel), "" if len(rel) == 1 else "s")
        if node is None:
            o = Outcome(name)
            o.fail("node is not installed (make deps)")
            summary.add(o)
            return
        o = run_program(name, [node, "--test", "--test-reporter=tap"] + rel, SYSTEM_DIR, env,
                        NODE_TIMEOUT, os.path.join(LOG_DIR, "system", "node"))
        summary.add(o)
        for other in args.also_node or []:
            run_other_node(other, node, rel, env, summary)


def node_major(node):
    try:
        out = subprocess.run([node, "-p", "process.versions.node"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    v = out.stdout.strip()
    return v.split(".")[0] if out.returncode == 0 and v else None


def run_other_node(other, node, rel, env, summary):
    """The node test files again with another Node.js (a different major version)."""
    major = node_major(other)
    name = "node %s --test (%d file%s)" % (major or "?", len(rel), "" if len(rel) == 1 else "s")
    if major is None:
        o = Outcome(name)
        o.fail("%s does not run" % other)
        summary.add(o)
        return
    if major == node_major(node):
        print("(node %s is the node on PATH: its run above counts)" % major)
        return
    o = run_program(name, [other, "--test", "--test-reporter=tap"] + rel, SYSTEM_DIR, env,
                    NODE_TIMEOUT, os.path.join(LOG_DIR, "system", "node" + major))
    summary.add(o)


def fuzz_one(exe, seconds, logroot):
    name = os.path.basename(exe)
    short = name[len("fuzz_"):]
    corpus = os.path.join(FUZZ_DIR, "corpus", short)
    dictionary = os.path.join(FUZZ_DIR, "dict", short + ".dict")
    artifacts = os.path.join(logroot, name + "-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="provd-" + name + "-")
    argv = [exe, "-max_total_time=%d" % seconds, "-timeout=10", "-rss_limit_mb=2048",
            "-print_final_stats=1", "-artifact_prefix=" + artifacts + "/"]
    if os.path.isfile(dictionary):
        argv.append("-dict=" + dictionary)
    # new inputs go to the scratch dir; the committed corpus is only read
    argv.append(scratch)
    if os.path.isdir(corpus):
        argv.append(corpus)
    env = base_env()
    for k in SAN_ENV:
        env.pop(k, None)  # libFuzzer sets up the sanitizers itself
    try:
        o = run_program(name, argv, ROOT, env, seconds + 120, os.path.join(logroot, name),
                        tap=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not os.path.isdir(corpus):
        o.note = "no corpus in fuzz/corpus/%s" % short
    m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", tail(o.log[:-4] + ".err", 200))
    if m and not o.note:
        o.note = "%s runs" % m[-1]
    return o


def run_fuzz(args, summary):
    summary.suite("fuzz smoke (%s, %d s per target)" % (args.fuzz_dir, args.fuzz_time))
    bdir = os.path.join(ROOT, args.fuzz_dir)
    if not os.path.isfile(os.path.join(bdir, "build.ninja")):
        summary.missing("fuzz", "%s is not built (make build-fuzz)" % args.fuzz_dir,
                        args.skip_missing)
        return
    targets = [t for t in executables(os.path.join(bdir, "fuzz", "fuzz_*"))
               if wanted(os.path.basename(t), args)]
    if not targets:
        if args.filter is None:
            summary.missing("fuzz", "no fuzz targets in %s/fuzz" % args.fuzz_dir, False)
        return
    logroot = os.path.join(LOG_DIR, "fuzz")
    jobs = max(1, min(len(targets), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(fuzz_one, t, args.fuzz_time, logroot) for t in targets]
        for f in futures:
            summary.add(f.result())


def main():
    ap = argparse.ArgumentParser(description="Run provd's unit, system and fuzz tests.")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--unit-only", action="store_true", help="only the unit tests")
    only.add_argument("--system-only", action="store_true", help="only the system tests")
    only.add_argument("--fuzz-only", action="store_true", help="only the fuzz smoke run")
    ap.add_argument("--filter", metavar="SUBSTR",
                    help="only test programs, scripts, node files and fuzz targets whose "
                         "file name contains SUBSTR")
    ap.add_argument("--build-dir", default="build", help="gcc build (default: build)")
    ap.add_argument("--san-dir", default="build-san",
                    help="sanitizer build (default: build-san)")
    ap.add_argument("--fuzz-dir", default="build-fuzz",
                    help="libFuzzer build (default: build-fuzz)")
    ap.add_argument("--fuzz-time", type=int, default=10, metavar="SECONDS",
                    help="fuzzing time per target (default: 10)")
    ap.add_argument("--also-node", action="append", metavar="NODE",
                    help="run the node test files again with this node binary, unless it is "
                         "the same major version as the node on PATH (repeatable)")
    ap.add_argument("--skip-missing", action="store_true",
                    help="count a build directory that does not exist as skipped, not failed")
    ap.add_argument("--log-dir", default=None, metavar="DIR",
                    help="where logs go (default: build-logs); give concurrent runs their own")
    args = ap.parse_args()
    if args.log_dir is not None:
        global LOG_DIR
        LOG_DIR = os.path.abspath(args.log_dir)

    start = time.time()
    summary = Summary()
    everything = not (args.unit_only or args.system_only or args.fuzz_only)
    if everything or args.unit_only:
        run_unit(args, summary)
    if everything or args.system_only:
        run_system(args, summary)
    if everything or args.fuzz_only:
        run_fuzz(args, summary)

    print()
    for title, p, f, s in summary.suites:
        print("%-44s %d passed, %d failed%s" % (title + ":", p, f,
                                                ", %d skipped" % s if s else ""))
    print("logs in %s; %.0f s" % (os.path.relpath(LOG_DIR, os.getcwd()), time.time() - start))
    line = "%d passed, %d failed" % (summary.passed, summary.failed)
    if summary.skipped:
        line += ", %d skipped" % summary.skipped
    print(line, flush=True)
    return 0 if summary.failed == 0 and summary.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
