#!/bin/sh
# Regenerates the test PKI of crates/proxy/tests (see README.md). Run from this directory.
# Needs only openssl(1). Certificates are valid for 100 years; keys are P-256 ECDSA.
set -eu
days=36500
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout ca.key -out ca.pem -days $days -subj "/CN=Tandem Test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
leaf() { # name, SANs
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$1.crt" -days $days -extfile "$1.ext"
  # The proxy's format: leaf first, then its chain, then the private key (PKCS#8).
  cat "$1.crt" ca.pem "$1.key" > "$1.pem"
  rm -f "$1.csr" "$1.ext" "$1.crt" "$1.key"
}
leaf a.test "DNS:a.test,DNS:*.wild.a.test"
leaf b.test "DNS:b.test"
leaf a2.test "DNS:a.test"
rm -f ca.srl
