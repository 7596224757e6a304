import { INDEX_KEY, OCI_LAYOUT_KEY } from './layout.js';
import { MEDIA_TYPES, serialize, type Catalog } from './records.js';
import type { Store } from './store.js';

/** index.json: the OCI view of the current image releases, derived from the catalog. */
export async function writeOciIndex(store: Store, catalog: Catalog, signal?: AbortSignal): Promise<void> {
  const manifests = catalog.releases
    .filter((e) => e.manifest)
    .map((e) => ({ ...e.manifest!, annotations: { 'org.opencontainers.image.ref.name': `${e.name}:${e.tag}` } }));
  await store.putAtomic(INDEX_KEY, serialize({ schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests }), signal);
  if (!(await store.stat(OCI_LAYOUT_KEY, signal))) {
    await store.putAtomic(OCI_LAYOUT_KEY, Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })), signal);
  }
}
