// The slice of the Velox API (@veloxts/core, @veloxts/router) the seed's samples use. The
// Velox packages ship no declarations, so the type check of the samples declares them here.
declare module '@veloxts/core' {
  import type { FastifyInstance } from 'fastify';
  /** `ctx` in a procedure (request.context); apps and plugins add their members. */
  export interface BaseContext {}
  export interface VeloxApp {
    register: FastifyInstance['register'];
    start(): Promise<void>;
    server: FastifyInstance;
  }
  export function veloxApp(options?: { port?: number; host?: string }): Promise<VeloxApp>;
}

declare module '@veloxts/router' {
  import type { BaseContext } from '@veloxts/core';
  import type { z } from 'zod';
  export interface Procedure<I, O> { readonly input?: I; readonly output?: O }
  export interface ProcedureWithInput<I> {
    query<O>(handler: (args: { input: I; ctx: BaseContext }) => Promise<O>): Procedure<I, O>;
    mutation<O>(handler: (args: { input: I; ctx: BaseContext }) => Promise<O>): Procedure<I, O>;
  }
  export interface ProcedureBuilder extends ProcedureWithInput<undefined> {
    input<S extends z.ZodTypeAny>(schema: S): ProcedureWithInput<z.infer<S>>;
  }
  export function procedure(): ProcedureBuilder;
  export function procedures<T extends Record<string, Procedure<any, any>>>(
    namespace: string, definitions: T): { namespace: string; procedures: T };
}
