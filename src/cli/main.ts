import { constants as osConstants } from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { setNativeCacheBase } from '../archive/zstdnative.js';
import { TarportError } from '../errors.js';
import { VERSION } from '../version.js';
import { applyConfig, applyEnvBooleans, collect, configSchema, envName, parseEnvBoolean, readConfigFile, refuseEmptyValues, validateConfig, valueFault } from './config.js';
import type { Context } from './context.js';
import { Output, EXIT, lineStyle, styleLine } from './output.js';

// Commands are loaded when they run: a consumer's cron line should not pay for OpenPGP, SSH and
// FTP modules it does not use (start-up time counts in every poll and pull).

/** An option that can also come from TARPORT_<NAME> and from the config file. */
function opt(flags: string, description: string): Option {
  const o = new Option(flags, description);
  if (o.long) o.env(envName(o.long));
  return o;
}

/** The flags of every command that takes a repository URL. */
function withConnection(cmd: Command): Command {
  return cmd
    .addOption(opt('--password-file <file>', 'read the FTP/SFTP password, or an https mirror\'s basic-auth password, from this file (or set TARPORT_PASSWORD)'))
    .addOption(opt('--ca <file>', 'PEM file of a private CA that signed the server certificate (FTPS, https, an https S3 endpoint)'))
    .addOption(opt('--identity <file>', 'SFTP private key (default ~/.ssh/id_ed25519, id_ecdsa or id_rsa)'))
    .addOption(opt('--known-hosts <file>', 'SFTP known_hosts file that must list the server key (default ~/.ssh/known_hosts)'))
    .addOption(opt('--connections <n>', 'transfers at once on FTP/FTPS (default 2)'))
    .addOption(opt('--idle-timeout <duration>', 'a connection silent this long while an answer or data is due counts as stalled: it is dropped and the transfer resumes on a new one').default('30s'))
    .addOption(opt('--s3-endpoint <url>', 'S3-compatible server for s3:// locations, http(s)://HOST[:PORT] (default AWS; or AWS_ENDPOINT_URL)'))
    .addOption(opt('--s3-region <region>', 'region of the s3:// bucket (default AWS_REGION, ~/.aws/config, else us-east-1)'))
    .addOption(opt('--s3-path-style', 'address s3:// buckets as http://HOST/BUCKET (MinIO, Ceph RGW and most S3-compatible servers)'));
}

function build(run: (fn: (ctx: Context) => Promise<number>) => Promise<void>): Command {
  const program = new Command('tarport')
    .description('Move container images without a registry: a directory, a USB stick, FTP, FTPS, SFTP or S3; consumers also read HTTP(S) mirrors.')
    .version(VERSION)
    .addOption(opt('--config <file>', 'read flags from a TOML or YAML file (flag names as keys)'))
    .addOption(opt('--json', 'machine-readable output on stdout'))
    .addOption(opt('-q, --quiet', 'only warnings and errors on stderr'))
    .showHelpAfterError()
    // commander's own error lines get the same marks as ours (journald priority, or the time)
    .configureOutput({ outputError: (str, write) => write(styleLine(lineStyle(), 'error', str.trimEnd())) })
    .exitOverride();

  const producerFlags = (cmd: Command) =>
    withConnection(cmd)
      .addOption(opt('--to <url>', 'repository to publish to'))
      .addOption(opt('--name <name:tag>', 'publish under this name:tag (required for docker export archives)'))
      .addOption(opt('--kind <kind>', 'what the archives are: auto (an image when it holds manifest.json or an OCI index), image, or rootfs (a docker export that holds a /manifest.json of its own)'))
      .addOption(opt('--max-expansion <ratio>', 'a compressed archive or layer may expand to at most this many times its size past its first 256 MiB (a decompression bomb is refused); 0: no limit, for an archive you trust whose layers hold little but zeros').default('200'))
      .addOption(opt('--compress <kind>', 'compression of stored layers: zstd, gzip or none (default: zstd; gzip, with a warning, where this Node has no zstd)'))
      .addOption(opt('--catalog-ttl <duration>', 'how long the catalog stays valid (consumers refuse it after)').default('90d'))
      .addOption(opt('--sign-key <file>', 'sign each release record and the catalog with this OpenPGP private key'))
      .addOption(opt('--sign-key-passphrase-file <file>', "the signing key's passphrase (or set TARPORT_SIGN_KEY_PASSPHRASE)"))
      .addOption(opt('--encrypt-to <keyfile>', 'encrypt layers and configs to this OpenPGP public key (repeatable)').argParser(collect))
      .addOption(opt('--metrics-file <file>', "write Prometheus metrics to FILE (node_exporter's textfile collector), atomically"))
      .addOption(opt('--init', 'create the repository when --to holds none (otherwise refused, exit 2: see tarport init)'));

  producerFlags(program.command('push').description('publish docker save / docker export archives (plain, .gz or .zst)').argument('<archive...>', 'archives to publish (- reads one from standard input)')).action(
    (archives: string[], _f, cmd: Command) => run(async (ctx) => (await import('./commands/push.js')).pushCommand(ctx, archives, cmd.opts())),
  );

  producerFlags(program.command('watch').description('the producer agent: publish what lands in DIR, then move it to done/ or failed/').argument('<dir>', 'folder to watch'))
    .addOption(opt('--once', 'handle what is in the folder, then exit (cron)'))
    .addOption(opt('--settle <duration>', 'a file is looked at once it has not changed for this long').default('5s'))
    .addOption(opt('--give-up <duration>', 'an archive that stays incomplete this long goes to failed/').default('10m'))
    .addOption(opt('--name-map <rule>', 'name files without tags: PATTERN=NAME:TAG, e.g. app-{version}.tar=app:{version} (repeatable)').argParser(collect))
    .addOption(opt('--remove-done', 'remove published files instead of moving them to done/'))
    .addOption(opt('--metrics-listen <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (loopback only)'))
    .action((dir: string, _f, cmd: Command) => run(async (ctx) => (await import('./commands/watch.js')).watchCommand(ctx, dir, cmd.opts())));

  const consumerFlags = (cmd: Command) =>
    withConnection(cmd)
      .argument('[name...]', 'NAME or NAME:TAG to follow (none: everything)')
      .addOption(opt('--from <url>', 'repository to pull from'))
      .addOption(opt('--state <dir>', 'state and cache folder (default /var/lib/tarport for root, else ~/.local/state/tarport)'))
      .addOption(opt('--allow-expired', 'load from an expired catalog (a late delivery); loudly'))
      .addOption(opt('--hook <cmd>', 'run CMD after each successful load, with NAME:TAG and the version as arguments'))
      .addOption(opt('--keep-images <n>', 'keep N earlier images of each tag, remove older ones from the daemon'))
      .addOption(opt('--trust <keyfile>', 'accept only releases signed by this OpenPGP public key (repeatable)').argParser(collect))
      .addOption(opt('--decrypt-key <file>', 'OpenPGP private key for encrypted releases (passphrase: TARPORT_DECRYPT_KEY_PASSPHRASE)'))
      .addOption(opt('--allow-unencrypted', 'with --decrypt-key, load releases whose layers or config are not encrypted too (refused by default)'))
      .addOption(opt('--runtime <kind>', 'load into: auto, docker, containerd or podman (auto: Docker when DOCKER_HOST is set or its socket exists)').default('auto'))
      .addOption(opt('--containerd-socket <path>', "containerd's socket (--runtime containerd)").default('/run/containerd/containerd.sock'))
      .addOption(opt('--namespace <ns>', 'containerd namespace to load into (k8s.io: kubelet, k3s and RKE2 see the image)').default('k8s.io'))
      .addOption(opt('--snapshotter <name>', "containerd snapshotter to unpack into (default: containerd's own, or CONTAINERD_SNAPSHOTTER)"))
      .addOption(opt('--podman-socket <url>', "Podman's API socket (--runtime podman; default: the root or rootless service's socket)"))
      .addOption(opt('--platform <os/arch[/variant]>', "platform to load from multi-platform releases and to import root file systems as (default: the runtime's own, e.g. linux/arm64/v8)"))
      .addOption(opt('--metrics-file <file>', "write Prometheus metrics to FILE (node_exporter's textfile collector), atomically"))
      .addOption(opt('--no-ack', 'leave no acknowledgement (tarport/acks/HOST-ID.json) in the repository after a load'))
      .addOption(opt('--host-id <id>', "this host's name in acknowledgements (default: a hash of /etc/machine-id)"));

  consumerFlags(program.command('pull').description('load every followed release newer than what was loaded (one run, for cron)'))
    .addOption(opt('--fetch-only', 'fill the verified cache with what the releases need and load nothing (prefetch ahead of a maintenance window)'))
    .action(
    (names: string[], _f, cmd: Command) => run(async (ctx) => (await import('./commands/pull.js')).pullCommand(ctx, names, cmd.opts())),
  );

  consumerFlags(program.command('poll').description('the consumer agent: pull every --interval until SIGTERM or SIGINT'))
    .addOption(opt('--interval <duration>', 'time between polls (e.g. 30s, 5m)').default('60s'))
    .addOption(opt('--metrics-listen <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (loopback only)'))
    .action((names: string[], _f, cmd: Command) => run(async (ctx) => (await import('./commands/pull.js')).pollCommand(ctx, names, cmd.opts())));

  withConnection(program
    .command('ls'))
    .description('list releases: name, tag, version, kind, size, created, signer, encrypted, platforms, hosts')
    .argument('<url>', 'repository')
    .addOption(opt('--latest', 'only the newest release per tag'))
    .action((url: string, _f, cmd: Command) => run(async (ctx) => (await import('./commands/ls.js')).lsCommand(ctx, url, cmd.opts())));

  withConnection(program.command('log'))
    .description('the history of a tag: every version with date, size, signer, encryption and record digest')
    .argument('<name:tag>', 'the tag (NAME alone: NAME:latest)')
    .addOption(opt('--from <url>', 'repository to read'))
    .action((ref: string, _f, cmd: Command) => run(async (ctx) => (await import('./commands/log.js')).logCommand(ctx, ref, cmd.opts())));

  withConnection(program.command('sync').description('copy what DST lacks from SRC (air gap): objects, records, then the catalog'))
    .argument('<src>', 'repository to copy from')
    .argument('<dst>', 'repository to copy to (a stick: a path)')
    .addOption(opt('--only <name[:tag]>', 'only this name or name:tag (repeatable)').argParser(collect))
    .addOption(opt('--have <file>', "an inventory of the receiving site (tarport inventory): carry only what it lacks"))
    .addOption(opt('--sign-key <file>', 'sign the catalog when it has to be merged, and the SHA256SUMS of --with-tool'))
    .addOption(opt('--sign-key-passphrase-file <file>', "the signing key's passphrase (or set TARPORT_SIGN_KEY_PASSPHRASE)"))
    .addOption(opt('--catalog-ttl <duration>', 'lifetime of a merged catalog').default('90d'))
    .addOption(opt('--max-file-size <size>', 'store larger objects in parts (e.g. fat32 = 4 GiB - 1, or 700M)'))
    .addOption(opt('--init', "create DST when it holds no repository, as a copy of SRC's identity (otherwise refused, exit 2)"))
    .addOption(opt('--with-tool <file>', 'also carry this file (tarport itself) into DST/tarport-tool/ with SHA256SUMS, signed with --sign-key (repeatable)').argParser(collect))
    .action((src: string, dst: string, _f, cmd: Command) => run(async (ctx) => (await import('./commands/sync.js')).syncCommand(ctx, src, dst, cmd.opts())));

  withConnection(program.command('inventory').description('write what this site has, for sync --have'))
    .addOption(opt('--docker', 'the layers of the daemon at DOCKER_HOST, and the releases this host loaded'))
    .addOption(opt('--from <url>', 'the objects and releases of this repository'))
    .addOption(opt('--repo <url>', 'deprecated: use --from (TARPORT_FROM)'))
    .addOption(opt('-o, --output <file>', 'where to write the inventory'))
    .addOption(opt('--state <dir>', 'consumer state folder (with --docker)'))
    .action((_f, cmd: Command) => run(async (ctx) => (await import('./commands/sync.js')).inventoryCommand(ctx, cmd.opts())));

  withConnection(program.command('check').description('verify a repository: every record, signature and object digest; non-zero on any fault'))
    .argument('<url>', 'repository')
    .addOption(opt('--trust <keyfile>', 'also verify signatures against this OpenPGP public key (repeatable)').argParser(collect))
    .action((url: string, _f, cmd: Command) => run(async (ctx) => (await import('./commands/maintenance.js')).checkCommand(ctx, url, cmd.opts())));

  withConnection(program.command('gc').description('remove versions beyond the newest N per tag, and objects nothing references'))
    .argument('<url>', 'repository')
    .addOption(opt('--keep <n>', 'versions to keep per tag'))
    .addOption(opt('--dry-run', 'say what would be removed, remove nothing'))
    .addOption(opt('--grace <duration>', 'leave objects and temporary files younger than this (a publish may be under way)').default('1h'))
    .action((url: string, _f, cmd: Command) => run(async (ctx) => (await import('./commands/maintenance.js')).gcCommand(ctx, url, cmd.opts())));

  withConnection(program.command('init').description('create a repository with its identity (tarport/format.json); an existing one is left as it is'))
    .argument('<url>', 'repository')
    .action((url: string, _f, cmd: Command) => run(async (ctx) => (await import('./commands/maintenance.js')).initCommand(ctx, url, cmd.opts())));

  withConnection(program.command('repair').description('rebuild a catalog that is missing or behind releases/; say what needs the signing key'))
    .argument('<url>', 'repository')
    .addOption(opt('--sign-key <file>', 'OpenPGP private key: sign the rebuilt catalog (needed when the catalog is signed)'))
    .addOption(opt('--sign-key-passphrase-file <file>', 'file holding the passphrase of --sign-key'))
    .addOption(opt('--catalog-ttl <duration>', 'how long the rebuilt catalog stays valid').default('90d'))
    .action((url: string, _f, cmd: Command) => run(async (ctx) => (await import('./commands/maintenance.js')).repairCommand(ctx, url, cmd.opts())));

  const keys = program.command('keys').description('OpenPGP keys for signing releases');
  keys
    .command('generate')
    .description('write PREFIX.pub.asc and PREFIX.sec.asc (OpenPGP, readable by gpg)')
    .addOption(opt('--uid <uid>', 'the key\'s user ID, "NAME <EMAIL>"'))
    .addOption(opt('--out <prefix>', 'where to write the key pair'))
    .addOption(opt('--type <type>', 'rsa (3072 bits, for gpg 2.2 and ocicrypt) or ecc (ed25519)').default('rsa'))
    .addOption(opt('--passphrase-file <file>', 'protect the private key with the passphrase in this file'))
    .action((_f, cmd: Command) => run(async (ctx) => (await import('./commands/keys.js')).keysGenerateCommand(ctx, cmd.opts())));

  program
    .command('version')
    .description("tarport's version, the Node it runs on, and where its zstd codec comes from")
    .action(() => run(async (ctx) => (await import('./commands/version.js')).versionCommand(ctx)));

  program
    .command('demo')
    .description('the main job end to end: push to a local-directory repository, pull into DOCKER_HOST')
    .addOption(opt('--archive <file>', 'archive to use (repeatable; default: two generated versions)').argParser(collect))
    .addOption(opt('--repo-dir <dir>', 'repository folder to use (default: a temporary one)'))
    .addOption(opt('--repo <dir>', 'deprecated: use --repo-dir (TARPORT_REPO_DIR)'))
    .addOption(opt('--state <dir>', 'consumer state folder (default: a temporary one)'))
    .action((_f, cmd: Command) => run(async (ctx) => (await import('./commands/demo.js')).demoCommand(ctx, cmd.opts())));

  return program;
}

/** The command tree alone, for the man page and the shell completions (scripts/gen-manual). */
export function commandTree(): Command {
  return build(async () => undefined);
}

/** Every option of every command: what a config file may set. */
function allOptions(program: Command): Option[] {
  const out: Option[] = [];
  const walk = (c: Command) => {
    out.push(...(c.options as readonly Option[]));
    c.commands.forEach(walk);
  };
  walk(program);
  return out;
}

/**
 * --json as the command line, TARPORT_JSON or the config file (`json = true`) asks, for errors that
 * come before the command runs. Where --config is given twice the last one counts, as in commander.
 */
async function jsonWanted(argv: string[]): Promise<boolean> {
  const end = argv.indexOf('--');
  const args = end < 0 ? argv : argv.slice(0, end);
  if (args.includes('--json')) return true;
  try {
    if (process.env.TARPORT_JSON !== undefined) return parseEnvBoolean('TARPORT_JSON', process.env.TARPORT_JSON);
  } catch {
    return false;
  }
  // `json = true` in the config file counts too, as for any flag: read here on its own, since the
  // error may have come before (or from) the file's own reading
  const i = args.map((a) => a === '--config' || a.startsWith('--config=')).lastIndexOf(true);
  const file = i < 0 ? process.env.TARPORT_CONFIG : args[i]!.startsWith('--config=') ? args[i]!.slice('--config='.length) : args[i + 1];
  if (!file) return false;
  try {
    return (await readConfigFile(file)).json === true;
  } catch {
    return false;
  }
}

/** The exit code of a command a signal stopped: 128 + the signal's number, as a shell reports it. */
export function interruptedExitCode(sig: NodeJS.Signals): number {
  return 128 + (osConstants.signals[sig] ?? 0);
}

/**
 * A reader of tarport's output that went away (a log shipper restarting, `| head`, a closed ssh
 * session) makes the next write fail (EPIPE, EIO). Unheard, that 'error' would end an agent in the
 * middle of its work; the work goes on, and the exit code stays the work's.
 */
function outliveOutputReaders(): void {
  for (const s of [process.stdout, process.stderr]) if (s.listenerCount('error') === 0) s.on('error', () => undefined);
}

export async function main(argv: string[]): Promise<number> {
  outliveOutputReaders();
  let code: number = EXIT.ok;
  let out: Output | undefined;
  const abort = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) return; // a second signal: bin/tarport.js ends the process at once
    signalled = sig;
    abort.abort(new TarportError('ABORTED', `interrupted by ${sig}`, { retryable: false }));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // the single executable writes its zstd binary to a cache file (src/archive/zstdnative.ts)
  setNativeCacheBase(process.env.XDG_CACHE_HOME);

  let program: Command;
  // the command being run, once its flags are read: a refused value is told by where it came from
  let acting: Command | undefined;
  const run = async (fn: (ctx: Context) => Promise<number>) => {
    const g = program.opts<{ json?: boolean; quiet?: boolean }>();
    out = new Output(g.json ?? false, g.quiet ?? false);
    code = await fn({ out, signal: abort.signal });
  };
  program = build(run);
  program.hook('preAction', async (_root, action) => {
    // environment first: a bad TARPORT_ boolean is refused even where a config file sets the flag
    applyEnvBooleans(program);
    applyEnvBooleans(action);
    const file = program.opts<{ config?: string }>().config;
    if (file) {
      const cfg = validateConfig(configSchema(allOptions(program)), await readConfigFile(file), file);
      applyConfig(program, cfg);
      applyConfig(action, cfg);
    }
    refuseEmptyValues(program, file);
    refuseEmptyValues(action, file);
    acting = action;
  });
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // help asked for (--help, `tarport help`) is no error; help shown for want of a command is
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || (e.code === 'commander.help' && e.exitCode === 0)) return EXIT.ok;
      const message = e.code === 'commander.help' ? 'a command is needed (the help above lists them)' : e.message.replace(/^error: /, '');
      // commander printed the message on stderr; a script under --json still gets its one document
      if (await jsonWanted(argv)) new Output(true).document({ error: { code: 'USAGE', message } });
      return EXIT.usage;
    }
    out ??= new Output(program.opts<{ json?: boolean }>().json ?? (await jsonWanted(argv)));
    if (signalled && abort.signal.aborted) {
      // an interrupted command: what it left is as a crash leaves it (invisible, resumable)
      out.error(new TarportError('ABORTED', `interrupted by ${signalled}: stopped; nothing half-done is visible, and the next run resumes`));
      code = interruptedExitCode(signalled);
    } else code = out.error(valueFault(e, acting ? [acting, program] : [program], program.opts<{ config?: string }>().config));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return code;
}
