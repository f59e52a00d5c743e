import { execa } from 'execa';
import type { LibvirtTarget } from '../../config/connector.js';
import { AgentError, QuiesceError } from '../../errors.js';
import { defaultTimeout, NO_REPLY_COMMANDS, type ExecOptions, type GuestAgent } from '../types.js';

/**
 * The fallback of LibvirtAgent: reaches a guest's agent through `virsh qemu-agent-command`, which
 * owns the agent socket of its domains and does its own guest-sync. Each call
 * is one virsh process; arguments go as an argv list, never through a shell.
 */
export class VirshAgent implements GuestAgent {
  readonly address: string;

  constructor(private readonly target: LibvirtTarget) {
    this.address = `libvirt:${target.uri ?? 'default'}/${target.domain}`;
  }

  async execute(command: string, args?: Record<string, unknown>, opts: ExecOptions = {}): Promise<unknown> {
    const request = JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args });
    const timeoutMs = opts.timeoutMs ?? defaultTimeout(command);
    const noReply = NO_REPLY_COMMANDS.has(command);
    const argv = [
      ...(this.target.uri ? ['-c', this.target.uri] : []),
      'qemu-agent-command',
      this.target.domain,
      request,
      // No --async for no-reply commands: libvirt 9 refuses it ("not available for now"); silence is handled below.
      '--timeout',
      String(Math.max(1, Math.ceil(timeoutMs / 1000))),
    ];
    const r = await execa(this.target.virsh ?? 'virsh', argv, {
      reject: false,
      timeout: timeoutMs + 5000,
      ...(opts.signal ? { cancelSignal: opts.signal } : {}),
      env: { LC_ALL: 'C' },
    });
    if (r.timedOut || r.isCanceled) {
      throw new QuiesceError('TIMEOUT', `${this.address}: virsh gave no answer to ${command} within ${timeoutMs} ms`, {
        guest: this.address,
      });
    }
    if (r.exitCode !== 0) {
      const err = this.failure(command, r.stderr);
      // No reply is success for shutdown/suspend: libvirt reports the guest going away or staying silent.
      if (
        noReply &&
        !(err instanceof AgentError) &&
        /End of file from agent socket|not responding|disappeared/i.test(r.stderr)
      )
        return undefined;
      throw err;
    }
    if (noReply) return undefined;
    try {
      const reply = JSON.parse(r.stdout) as { return?: unknown };
      return reply.return;
    } catch (err) {
      throw new QuiesceError('OUT_OF_SYNC', `${this.address}: virsh printed a reply that is not JSON`, {
        cause: err,
        guest: this.address,
      });
    }
  }

  async close(): Promise<void> {}

  /** Maps virsh's error text to a typed error. */
  private failure(command: string, stderr: string): QuiesceError {
    const text = stderr.replace(/^error: /gm, '').trim();
    const agentError = /unable to execute QEMU agent command '[^']*': (.*)$/m.exec(text);
    if (agentError) return new AgentError(command, 'GenericError', agentError[1]!, this.address);
    if (/not responding|timed out|timeout/i.test(text)) {
      return new QuiesceError('TIMEOUT', `${this.address}: ${text}`, { guest: this.address });
    }
    if (/not connected|not configured|agent is not (available|connected)/i.test(text)) {
      return new QuiesceError('CHANNEL_GONE', `${this.address}: ${text}`, { guest: this.address });
    }
    return new QuiesceError('CONNECT_FAILED', `${this.address}: ${text}`, { guest: this.address });
  }
}
