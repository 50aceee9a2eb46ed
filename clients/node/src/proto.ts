// Loads proto/ledgerq/v1/ledgerq.proto at run time with @grpc/proto-loader: no generated code.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/**
 * How messages are decoded, everywhere in this package: camelCase field names, 64-bit integers
 * as decimal strings, enums as names, bytes as Buffer, defaults filled in, oneofs named.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
  oneofs: true,
};

const PROTO_FILE = path.join('ledgerq', 'v1', 'ledgerq.proto');

/**
 * Where ledgerq.proto is found: the `protoPath` option, else $LEDGERQ_PROTO_PATH, else a copy
 * inside the package (put there by `npm pack`), else the repository's proto/ two folders up
 * from the package (clients/node -> proto).
 */
export function resolveProtoPath(explicit?: string): string {
  if (explicit) return path.resolve(explicit);
  const env = process.env.LEDGERQ_PROTO_PATH;
  if (env) return path.resolve(env);
  const pkgRoot = path.resolve(__dirname, '..');
  const candidates = [
    path.join(pkgRoot, 'proto', PROTO_FILE),
    path.join(pkgRoot, '..', '..', 'proto', PROTO_FILE),
  ];
  for (const c of candidates) if (fs.existsSync(c)) return c;
  throw new Error(
    `ledgerq: cannot find ${PROTO_FILE}; looked in ${candidates.join(' and ')}; ` +
      'give the protoPath option or set LEDGERQ_PROTO_PATH',
  );
}

type ServiceCtor = grpc.ServiceClientConstructor;

export interface LedgerqServices {
  JobService: ServiceCtor;
  WorkerService: ServiceCtor;
  AdminService: ServiceCtor;
  AuditService: ServiceCtor;
}

export type ServiceName = keyof LedgerqServices;

const cache = new Map<string, LedgerqServices>();

/** The service constructors of ledgerq.v1, loaded once per proto file. */
export function loadServices(protoPath?: string): LedgerqServices {
  const file = resolveProtoPath(protoPath);
  const hit = cache.get(file);
  if (hit) return hit;
  // google/protobuf/*.proto (the only imports) come with protobufjs.
  const def = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [path.dirname(file)] });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    ledgerq?: { v1?: Partial<LedgerqServices> };
  };
  const v1 = pkg.ledgerq?.v1;
  if (!v1 || !v1.JobService || !v1.WorkerService || !v1.AdminService || !v1.AuditService) {
    throw new Error(`ledgerq: ${file} does not define the ledgerq.v1 services`);
  }
  const services = v1 as LedgerqServices;
  cache.set(file, services);
  return services;
}
