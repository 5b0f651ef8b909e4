import type { BaseContext } from '@veloxts/core';
import { procedure, procedures } from '@veloxts/router';
import { z } from 'zod';

export const orderProcedures = procedures('orders', {
  createOrder: procedure()
    .input(z.object({ productId: z.string(), quantity: z.number() }))
    .mutation(async ({ input, ctx }) => {
      const order = await ctx.db.order.create({ data: input });

      // Broadcast to public channel
      await ctx.events.broadcast('orders', 'order.created', {
        orderId: order.id,
        total: order.total,
      });

      // Broadcast to user's private channel
      await ctx.events.broadcast(`private-user.${ctx.user.id}`, 'order.confirmed', order);

      return order;
    }),
});

export async function snippets(ctx: BaseContext): Promise<void> {
  // Basic broadcast
  await ctx.events.broadcast('channel', 'event-name', { data: 'value' });
  // Broadcast to multiple channels
  await ctx.events.broadcastToMany(['user.1', 'user.2', 'user.3'], 'notification', {
    message: 'System maintenance scheduled',
  });
  // Broadcast to all except sender (e.g., chat)
  await ctx.events.broadcastExcept('chat.room-1', 'message.sent', { text: 'Hello!' }, senderSocketId);

  // Server
  await ctx.events.broadcast('announcements', 'new-feature', { title: 'Dark Mode Released!' });
  await ctx.events.broadcast('private-user.123', 'notification', { message: 'You have a new message' });
  // Server - track who's online
  const members = await ctx.events.presenceMembers('presence-chat.room-1');
  members.map((m) => m.id);

  // Get subscriber count
  const count: number = await ctx.events.subscriberCount('orders');
  // Check if channel has subscribers
  const hasSubscribers: boolean = await ctx.events.hasSubscribers('orders');
  // Get all active channels
  const channels: string[] = await ctx.events.channels();
  void [count, hasSubscribers, channels];
}
