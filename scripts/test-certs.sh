#!/usr/bin/env bash
# Generates throw-away certificates for the secured-broker tests and demos (never commit them):
#
#   ca.pem ca.key                    the test CA
#   server.pem server.key            the broker's TLS front end: CN localhost, SAN
#                                    IP:127.0.0.1 and DNS:localhost
#   wrong-host.pem wrong-host.key    a server certificate from the same CA for another name
#                                    (hostname-mismatch case)
#   client.pem client.key            a client certificate from the CA (mutual TLS, PEM style)
#   client.p12                       the same client key and certificate as a PKCS#12 keystore,
#                                    password "keystore-pass" (the Kafka tutorial's style)
#   expired.pem expired.key          a client certificate from the CA that expired yesterday
#   rogue-ca.pem rogue.pem rogue.key a client certificate from another CA (rejected by the
#                                    broker) and that CA (an unknown CA for a client)
#
# Usage: scripts/test-certs.sh OUTDIR
set -euo pipefail

out=${1:?usage: scripts/test-certs.sh OUTDIR}
mkdir -p "$out"
cd "$out"
command -v openssl >/dev/null || { echo "test-certs.sh: openssl is needed" >&2; exit 1; }

quiet() { "$@" >/dev/null 2>&1 || { echo "test-certs.sh: failed: $*" >&2; "$@"; exit 1; }; }

new_ca() { # name subject
    quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj "/CN=$2" \
        -keyout "$1.key" -out "$1.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

# leaf NAME CA CN EXT_FILE [DAYS_START DAYS_END]
leaf() {
    local name=$1 ca=$2 cn=$3 ext=$4
    quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr"
    if (($# > 4)); then
        # An already-expired certificate: openssl x509 -req cannot back-date, `openssl ca` can.
        mkdir -p ca-db
        : >ca-db/index.txt
        printf '01\n' >ca-db/serial
        cat >ca-db/ca.cnf <<EOF
[ca]
default_ca = test
[test]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
EOF
        quiet openssl ca -batch -config ca-db/ca.cnf -cert "$ca.pem" -keyfile "$ca.key" \
            -in "$name.csr" -out "$name.pem" -startdate "$5" -enddate "$6" -extfile "$ext" -notext
    else
        quiet openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial \
            -days 30 -sha256 -extfile "$ext" -out "$name.pem"
    fi
    rm -f "$name.csr"
}

printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
printf 'subjectAltName=DNS:elsewhere.invalid\nextendedKeyUsage=serverAuth\n' >wrong-host.ext
printf 'extendedKeyUsage=clientAuth\n' >client.ext

new_ca ca "openmsi test CA"
new_ca rogue-ca "rogue CA"
leaf server ca localhost server.ext
leaf wrong-host ca elsewhere.invalid wrong-host.ext
leaf client ca openmsi-client client.ext
leaf rogue rogue-ca rogue-client client.ext
yesterday=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)
last_week=$(date -u -d '-7 days' +%Y%m%d%H%M%SZ)
leaf expired ca expired-client client.ext "$last_week" "$yesterday"
quiet openssl pkcs12 -export -in client.pem -inkey client.key -certfile ca.pem \
    -passout pass:keystore-pass -out client.p12
rm -rf ca-db ./*.ext ./*.srl
chmod 600 ./*.key client.p12
echo "$PWD"
