// What the seed's app has of its own: `request.user` from its auth hook, `ctx.db` from its ORM
// and `ctx.user`; and `ctx.events`, the vxevents manager in procedures.
import type { EventsManager } from 'vxevents';

export interface AppUser {
  id: string;
  name: string;
  avatar?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    user?: AppUser;
  }
}

declare module '@veloxts/core' {
  interface BaseContext {
    db: any;
    user: AppUser;
    events: EventsManager;
  }
}
