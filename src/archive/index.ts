export { TarArchive, MAX_METADATA, type TarEntry } from './tar.js';
export { bombGuard, DecompressionBombError, MAX_RATIO } from './bomb.js';
export { ARCHIVE_KINDS, readArchiveContent, sniffStream, type ArchiveKind, REFERENCE_DIGEST, REFERENCE_TYPE, type ArchiveBlob, type ArchiveContent, type ArchiveImage, type ArchiveIndex, type ArchiveLayer, type ArchivePlatform, type IndexDescriptor, type IndexMember } from './image.js';
export { CodecError, compressor, decompressor, threadedDecompressor, prewarmDecompressors, releaseDecompressors, releaserOf, sniffCompression, zstdCodecs, zstdCodecInfo, zstdNotLoadedNote, COMPRESSIONS, type ZstdCodecInfo, type Compression } from './compression.js';
export { ociBlobPath, ociLayerMediaType, ociLoadManifest, writeLoadArchive, writeOciLoadArchive, type LoadArchiveSpec, type LoadFile, type OciLoadArchiveSpec } from './loadtar.js';
export { writeDemoArchives } from './synthetic.js';
export { feedFile, type FeedOptions, type Follow } from './filefeed.js';
export { LayerWatch, type WatchedLayer } from './layerwatch.js';
