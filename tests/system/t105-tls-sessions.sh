#!/usr/bin/env bash
# TLS facts clients rely on: TLS 1.2 and 1.3 are offered, TLS 1.1 is not, and provd
# hands out no resumable sessions (no session id, no tickets): a resumed session would
# carry an X.509 device's leaf but not the intermediates it sent, and every connection
# proves its certificate afresh. (Before, provd issued tickets but had no session id
# context, and OpenSSL answered each resumption with an internal_error alert: every
# Node 18 device failed, as Node 18 resumes sessions.)
. "$(dirname "$0")/lib/lib.sh"
lib_init 127.0.0.105 t105

# s_client_request VERSIONFLAG: one GET of an unknown operation; output in $T/sc.out,
# the session (if provd offered one) in $T/sess.
s_client_request()
{
    rm -f "$T/sess"
    # stdin stays open until provd answers and closes (Connection: close)
    { printf 'GET /%s/registrations/x/operations/y HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' \
        "$SCOPE" "$IP"; sleep 1; } |
        timeout 10 openssl s_client -connect "$IP:443" -CAfile "$CA" -quiet "$1" \
            -sess_out "$T/sess" >"$T/sc.out" 2>"$T/sc.err"
}

version_case()
{
    local v=$1
    s_client_request "$v" || true
    grep -q '^HTTP/1.1 401' "$T/sc.out" ||
        fail "$v: no answer: $(head -c 300 "$T/sc.out") $(head -c 300 "$T/sc.err")" || return 1
    if [ -s "$T/sess" ]; then
        openssl sess_id -in "$T/sess" -noout -text >"$T/sess.txt" 2>&1
        if grep -q 'TLS session ticket:' "$T/sess.txt" ||
            grep -Eq 'Session-ID: [0-9A-F]+' "$T/sess.txt"; then
            fail "$v: provd offered a resumable session:" "$(cat "$T/sess.txt")"
            return 1
        fi
    fi
    return 0
}

case_tls12() { version_case -tls1_2; }
case_tls13() { version_case -tls1_3; }

case_old_tls_refused()
{
    if printf 'Q\n' | timeout 10 openssl s_client -connect "$IP:443" -tls1_1 >"$T/sc.out" 2>&1; then
        grep -q 'Cipher is (NONE)\|no protocols available\|alert' "$T/sc.out" ||
            fail "TLS 1.1 handshake succeeded: $(head -c 300 "$T/sc.out")"
    fi
    return 0
}

add_case "TLS 1.2: requests are answered; no resumable session is offered" case_tls12
add_case "TLS 1.3: requests are answered; no session ticket is offered" case_tls13
add_case "TLS 1.1 is not offered" case_old_tls_refused
run_cases
