// Manifests by tag for contrib/nginx/registry.conf (njs: Debian's libnginx-mod-http-js, nginx.org's
// nginx-module-njs). A static server cannot know a tag's digest, which the registry API requires in
// Docker-Content-Digest (containerd's resolver reads it from a HEAD); this reads the tag file tarport
// wrote, hashes the bytes it sends and names them, so the header always matches the body, whatever
// a sync just replaced, with no reload and nothing else written by tarport.
import fs from 'fs';
import crypto from 'crypto';

// the kinds in the order a tag file is looked for: one tag has one file (tarport removes the other)
const TYPES = [
  ['oci-index', 'application/vnd.oci.image.index.v1+json'],
  ['oci-manifest', 'application/vnd.oci.image.manifest.v1+json'],
  ['docker-list', 'application/vnd.docker.distribution.manifest.list.v2+json'],
  ['docker-manifest', 'application/vnd.docker.distribution.manifest.v2+json'],
];

/** The first tag file that exists, read whole (one read: the digest is of the bytes sent). */
function find(root, names, tag) {
  // plain loops: njs 0.7 (Debian 12) has no for…of and no destructuring
  for (let i = 0; i < names.length; i++) {
    for (let j = 0; j < TYPES.length; j++) {
      try {
        return { type: TYPES[j][1], bytes: fs.readFileSync(`${root}/${names[i]}/_manifests/${tag}.${TYPES[j][0]}`) };
      } catch (e) {
        if (e.code !== 'ENOENT' && e.code !== 'ENOTDIR') throw e;
      }
    }
  }
  return undefined;
}

function manifestByTag(r) {
  const v = r.variables;
  // a one-component name (x) is Docker Hub's library/x when a mirror of Docker Hub asks for it
  const names = v.tp_name.indexOf('/') < 0 ? [v.tp_name, `library/${v.tp_name}`] : [v.tp_name];
  r.headersOut['Docker-Distribution-API-Version'] = 'registry/2.0';
  let found;
  try {
    found = find(v.tp_root, names, v.tp_tag);
  } catch (e) {
    r.error(`tarport registry: ${v.tp_name}:${v.tp_tag}: ${e.message}`);
    r.return(500);
    return;
  }
  if (!found) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(404, '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}');
    return;
  }
  const digest = `sha256:${crypto.createHash('sha256').update(found.bytes).digest('hex')}`;
  // revalidated by caches (a tag moves with every update): the digest is the validator
  r.headersOut['Cache-Control'] = 'no-cache';
  r.headersOut['ETag'] = `"${digest}"`;
  r.headersOut['Docker-Content-Digest'] = digest;
  if (r.headersIn['If-None-Match'] === `"${digest}"`) {
    r.return(304);
    return;
  }
  r.headersOut['Content-Type'] = found.type;
  r.return(200, found.bytes);
}

export default { manifestByTag };
