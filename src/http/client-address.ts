/**
 * The address a request comes from, honouring TRUST_PROXY the way Fastify
 * does (SPEC §1): X-Forwarded-For is walked from the right, through the
 * proxies we trust, and the first untrusted address is the client. With
 * TRUST_PROXY unset the socket peer is the client, whatever headers say.
 */
import type { IncomingMessage } from 'node:http';
import proxyAddr from '@fastify/proxy-addr';
import type { TrustProxy } from '../config/types.js';

export type TrustFunction = (address: string, hop: number) => boolean;

/** null = trust nobody: use the socket peer. */
export function trustFunction(trust: TrustProxy): TrustFunction | null {
  switch (trust.kind) {
    case 'none':
      return null;
    case 'all':
      return () => true;
    case 'hops':
      return (_address, hop) => hop < trust.hops;
    case 'list':
      return proxyAddr.compile(trust.entries);
  }
}

export function clientAddressResolver(trust: TrustProxy): (req: IncomingMessage) => string {
  const trusted = trustFunction(trust);
  if (trusted === null) return (req) => req.socket.remoteAddress ?? 'unknown';
  return (req) => proxyAddr(req, trusted);
}
