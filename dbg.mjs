import { TarArchive, readArchiveContent } from './dist/archive/index.js';
const t = await TarArchive.open('/tmp/fx/app-v1.tar');
const c = await readArchiveContent(t);
console.log(JSON.stringify(c.images[0].layers));
for (const l of c.images[0].layers) console.log(t.entries.get(l.entry));
