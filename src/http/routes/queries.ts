/**
 * Read-only views of one tenant's live state (SPEC §6.2): its channels and
 * a user's subscriptions. Names are returned exactly as clients use them.
 */
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { ApiError } from '../../errors.js';
import { isValidChannelName } from '../../hub/channel-name.js';
import type { Hub } from '../../hub/hub.js';
import { tenantOf } from '../api-scope.js';

export function registerQueryRoutes(app: FastifyInstance, hub: Hub): void {
  app.get('/api/v1/channels', async (request) => {
    const space = hub.space(tenantOf(request));
    const channels = space
      ? [...space.channels].map(([name, subscribers]) => ({ name, subscriber_count: subscribers.size }))
      : [];
    channels.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { channels, total_channels: channels.length };
  });

  app.get(
    '/api/v1/channels/:name',
    { schema: { params: Type.Object({ name: Type.String() }) } },
    async (request) => {
      const { name } = request.params as { name: string };
      if (!isValidChannelName(name)) {
        throw new ApiError('VALIDATION_ERROR', 'Invalid channel name', {
          details: [{ path: 'name', message: `invalid channel name ${JSON.stringify(name)}` }],
        });
      }
      const subscribers = hub.space(tenantOf(request))?.channels.get(name);
      if (!subscribers) throw new ApiError('CHANNEL_NOT_FOUND', `Channel '${name}' not found or has no subscribers`);
      return { name, subscriber_count: subscribers.size };
    },
  );

  app.get(
    '/api/v1/users/:user_id/subscriptions',
    { schema: { params: Type.Object({ user_id: Type.String({ minLength: 1, maxLength: 256 }) }) } },
    async (request) => {
      const { user_id: userId } = request.params as { user_id: string };
      const connections = hub.space(tenantOf(request))?.users.get(userId);
      if (!connections) throw new ApiError('USER_NOT_CONNECTED', `User '${userId}' has no active connections`);
      const subscriptions = new Set<string>();
      for (const connection of connections) for (const channel of connection.channels) subscriptions.add(channel);
      return { user_id: userId, connection_count: connections.size, subscriptions: [...subscriptions].sort() };
    },
  );
}
