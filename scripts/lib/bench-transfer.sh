# sourced by scripts/bench: transfers against the best native clients, same file, same server
tp_log "transfers: tarport vs curl (FTP, FTPS) and OpenSSH sftp, ${TMB} MiB of random bytes"
head -c $((TMB * 1024 * 1024)) /dev/urandom > "$W/transfer.bin"
hostport() { echo "$1" | sed -E 's#^[a-z]+://[^@]+@([^/]+)(/.*)$#\1#'; }
pathof() { echo "$1" | sed -E 's#^[a-z]+://[^@]+@[^/]+(/.*)$#\1#'; }
ftpuser=$(echo "$TP_FTP_URL" | sed -E 's#^[a-z]+://([^@]+)@.*#\1#')
tsecs() { /usr/bin/time -f %e -o "$W/t" "$@" >/dev/null 2>"$W/terr" || { cat "$W/terr" >&2; return 1; }; cat "$W/t"; }
# Both sides start each transfer from the same state: the baseline's file is removed after its
# round, as tarport's is (a new file each time, not an overwrite), and who goes first alternates
# from round to round, so that a machine that warms up or slows down does not favour either side.
for round in $(seq 1 "${TRANSFER_ROUNDS:-5}"); do
for proto in ftp ftps ftp2; do
  case $proto in ftp) url=$TP_FTP_URL; extra=();; ftps) url=$TP_FTPS_URL; extra=(--ssl-reqd --cacert "$TP_FTPS_CA");; ftp2) url=$TP_FTP2_URL; extra=();; esac
  p=$(pathof "$url"); base="ftp://$(hostport "$url")/%2F${p#/}/bench-curl.bin"
  baseline() {
    cu=$(tsecs curl -s "${extra[@]}" --user "$ftpuser:$TP_FTP_PASSWORD" -T "$W/transfer.bin" "$base")
    cd_=$(tsecs curl -s "${extra[@]}" --user "$ftpuser:$TP_FTP_PASSWORD" -o /dev/null "$base")
    curl -s "${extra[@]}" --user "$ftpuser:$TP_FTP_PASSWORD" -Q "DELE $p/bench-curl.bin" -o /dev/null "ftp://$(hostport "$url")/"
  }
  ours() { read -r tu td < <(TARPORT_PASSWORD=$TP_FTP_PASSWORD node scripts/lib/bench-transfer.mjs "$url/bench" "$W/transfer.bin" | node -e 'const j=JSON.parse(require("fs").readFileSync(0));console.log(j.upload,j.download)'); }
  if ((round % 2)); then baseline; ours; else ours; baseline; fi
  echo "$proto $tu $cu $td $cd_" >> "$W/transfers.txt"
done
sp=$(hostport "$TP_SFTP_URL"); sport=${sp##*:}
sftpcmd=(sftp -q -b - -P "$sport" -i "$TP_SFTP_IDENTITY" -o UserKnownHostsFile="$TP_SFTP_KNOWN_HOSTS" -o Ciphers=aes128-gcm@openssh.com "$ftpuser@127.0.0.1")
spath=$(pathof "$TP_SFTP_URL")
baseline() {
  su=$(echo "put $W/transfer.bin $spath/bench-sftp.bin" > "$W/b1"; /usr/bin/time -f %e -o "$W/t" "${sftpcmd[@]}" < "$W/b1" >/dev/null; cat "$W/t")
  sd=$(echo "get $spath/bench-sftp.bin /dev/null" > "$W/b2"; /usr/bin/time -f %e -o "$W/t" "${sftpcmd[@]}" < "$W/b2" >/dev/null; cat "$W/t")
  echo "rm $spath/bench-sftp.bin" | "${sftpcmd[@]}" >/dev/null
}
ours() { read -r tu td < <(node scripts/lib/bench-transfer.mjs "$TP_SFTP_URL/bench" "$W/transfer.bin" | node -e 'const j=JSON.parse(require("fs").readFileSync(0));console.log(j.upload,j.download)'); }
if ((round % 2)); then baseline; ours; else ours; baseline; fi
echo "sftp $tu $su $td $sd" >> "$W/transfers.txt"
done
