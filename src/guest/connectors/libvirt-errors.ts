import { AgentError, QuiesceError } from '../../errors.js';
import { LibvirtError, VirErr } from '../../libvirt/error.js';

/** libvirt's wrapping of the agent's own error reply (qemuAgentCheckError); the agent's desc follows. */
const AGENT_REPLY = /unable to execute QEMU agent command '[^']*': ([\s\S]*)$/;

/** The agent is not there at all (no channel, not connected, disabled after an earlier error). */
const AGENT_GONE = /not connected|not configured|due to an error|not available due|domain is not running/i;

/** The agent did not answer in time (libvirt 9.0 reports these as AGENT_UNRESPONSIVE too). */
const AGENT_SLOW = /not available for now|didn't respond|did not respond|not responding|timed out|timeout/i;

/**
 * What a failed qemu-agent-command means, in our error codes:
 * - the agent's own error reply → AgentError with the agent's desc (libvirt
 *   keeps the desc but drops the class: it is GenericError here);
 * - the agent took too long → TIMEOUT;
 * - no agent (channel not connected, not configured, domain not running) → CHANNEL_GONE;
 * - a domain that does not exist → CONNECT_FAILED;
 * - anything else keeps the code errorCodeFor() gave it.
 * Our own errors (call timeout, dropped connection) pass through.
 */
export function agentFailure(err: unknown, command: string, address: string): QuiesceError {
  if (!(err instanceof LibvirtError)) {
    if (err instanceof QuiesceError) {
      return err.guest === undefined
        ? new QuiesceError(err.code, err.message, { cause: err.cause, guest: address })
        : err;
    }
    return new QuiesceError('CONNECT_FAILED', `${address}: ${(err as Error).message}`, { cause: err, guest: address });
  }
  const text = err.libvirtMessage;
  const opt = { cause: err, guest: address };
  const reply = AGENT_REPLY.exec(text);
  if (reply && (err.virCode === VirErr.INTERNAL_ERROR || err.virCode === VirErr.AGENT_COMMAND_FAILED)) {
    const e = new AgentError(command, 'GenericError', reply[1]!.trim(), address);
    return Object.assign(e, { cause: err });
  }
  switch (err.virCode) {
    case VirErr.AGENT_COMMAND_TIMEOUT:
    case VirErr.OPERATION_TIMEOUT:
      return new QuiesceError('TIMEOUT', `${address}: ${command}: ${text}`, opt);
    case VirErr.AGENT_UNRESPONSIVE:
      // libvirt 9.0 says "Guest agent is not responding: <why>" for a slow agent and for a missing one alike.
      return new QuiesceError(
        AGENT_GONE.test(text) || !AGENT_SLOW.test(text.replace(/^Guest agent is not responding: /, ''))
          ? 'CHANNEL_GONE'
          : 'TIMEOUT',
        `${address}: ${command}: ${text}`,
        opt,
      );
    case VirErr.AGENT_UNSYNCED:
      return new QuiesceError('OUT_OF_SYNC', `${address}: ${command}: ${text}`, opt);
    case VirErr.NO_DOMAIN:
      return new QuiesceError('CONNECT_FAILED', `${address}: ${text}`, opt);
    case VirErr.OPERATION_INVALID:
    case VirErr.ARGUMENT_UNSUPPORTED:
      if (AGENT_GONE.test(text)) return new QuiesceError('CHANNEL_GONE', `${address}: ${command}: ${text}`, opt);
      break;
  }
  if (AGENT_GONE.test(text)) return new QuiesceError('CHANNEL_GONE', `${address}: ${command}: ${text}`, opt);
  return new QuiesceError(err.code, `${address}: ${command}: ${text}`, opt);
}

/** For a command that sends no reply on success: does this failure just mean the reply never came? */
export function isSilence(err: QuiesceError): boolean {
  if (err instanceof AgentError) return false;
  return (
    err.code === 'TIMEOUT' ||
    err.code === 'CHANNEL_GONE' ||
    /End of file from agent|disappeared|not running/i.test(err.message)
  );
}
