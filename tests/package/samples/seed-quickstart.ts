// The seed's samples with '@veloxts/events' read as 'vxevents'. Velox's veloxApp() returns a
// Promise (shared/velox/README.md), so `await` is added where the seed's text has none.
import { veloxApp } from '@veloxts/core';
import { eventsPlugin } from 'vxevents';

const app = await veloxApp();
app.register(eventsPlugin({ driver: 'ws', path: '/ws' }));
await app.start();
