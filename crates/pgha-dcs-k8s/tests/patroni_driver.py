"""Drives Patroni's own Kubernetes DCS (patroni.dcs.kubernetes.Kubernetes)
for pgha's cross-check: one JSON command per stdin line, one JSON answer per
stdout line. Every node is a Kubernetes instance of its own, so each keeps
Patroni's own view of the leader record (first seen, as Patroni judges it).

Environment: KUBECONFIG (the emulator's), PGHA_SCOPE, PGHA_NAMESPACE,
PGHA_CONTEXT, PGHA_TTL. The caller bounds this process in time.
"""

import json
import os
import sys
import time

from patroni.dcs import get_dcs

NODES = {}


def node(name):
    if name not in NODES:
        config = {
            'scope': os.environ['PGHA_SCOPE'],
            'name': name,
            'ttl': int(os.environ.get('PGHA_TTL', '30')),
            'loop_wait': 1,
            'retry_timeout': 5,
            'kubernetes': {
                'namespace': os.environ['PGHA_NAMESPACE'],
                'context': os.environ['PGHA_CONTEXT'],
                'labels': {'application': 'patroni'},
                'use_endpoints': os.environ.get('PGHA_USE_ENDPOINTS') == '1',
            },
        }
        NODES[name] = get_dcs(config)
    return NODES[name]


def view(cluster):
    """The cluster as Patroni sees it, in plain JSON."""
    def opt(x):
        return x if x is None else str(x)
    out = {
        'initialize': cluster.initialize,
        'config': None if not cluster.config else {
            'version': opt(cluster.config.version), 'data': cluster.config.data},
        'leader': None if not cluster.leader else {
            'name': cluster.leader.name, 'version': opt(cluster.leader.version)},
        'members': sorted([{'name': m.name, 'version': opt(m.version),
                            'data': {k: v for k, v in m.data.items() if k != 'pod_labels'},
                            'labels': m.data.get('pod_labels')} for m in cluster.members],
                          key=lambda m: m['name']),
        'failover': None if not cluster.failover else {
            'leader': cluster.failover.leader, 'member': cluster.failover.candidate,
            'scheduled_at': cluster.failover.scheduled_at and cluster.failover.scheduled_at.isoformat(),
            'version': opt(cluster.failover.version)},
        'sync': {'leader': cluster.sync.leader, 'sync_standby': sorted(cluster.sync.members),
                 'quorum': cluster.sync.quorum, 'version': opt(cluster.sync.version)},
        'history': None if not cluster.history else cluster.history.lines,
        'status': {'optime': cluster.status.last_lsn, 'slots': cluster.status.slots,
                   'retain_slots': cluster.status.retain_slots},
        'failsafe': cluster.failsafe,
    }
    return out


def run(cmd):
    d = node(cmd.get('node', 'p1'))
    op = cmd['op']
    if op == 'get_cluster':
        return view(d.get_cluster())
    if op == 'wait_leader':
        # Polls Patroni's own view until the leader is `want` (None: unlocked).
        deadline = time.time() + cmd['within']
        start = time.time()
        while time.time() < deadline:
            c = d.get_cluster()
            name = c.leader and c.leader.name or None
            if c.leader and not c.leader.name:
                name = None
            if name == cmd['want']:
                return {'after': time.time() - start, 'view': view(c)}
            time.sleep(0.1)
        raise TimeoutError('leader still %r' % (name,))
    if op == 'initialize':
        d.get_cluster()
        return d.initialize(create_new=cmd.get('create_new', True), sysid=cmd.get('sysid', ''))
    if op == 'cancel_initialization':
        return d.cancel_initialization()
    if op == 'set_config':
        c = d.get_cluster()
        version = c.config and c.config.version
        return d.set_config_value(json.dumps(cmd['value'], separators=(',', ':')), version)
    if op == 'touch_member':
        d.get_cluster()
        return d.touch_member(cmd['data'])
    if op == 'acquire':
        # As Patroni's HA loop does: it races for the lock only when its own
        # view of the cluster is unlocked (attempt_to_acquire_leader itself
        # only guards by resourceVersion).
        if not d.get_cluster().is_unlocked():
            return False
        return d.attempt_to_acquire_leader()
    if op == 'update_leader':
        c = d.get_cluster()
        return d.update_leader(c, cmd.get('last_lsn'), cmd.get('slots'), cmd.get('failsafe'))
    if op == 'delete_leader':
        c = d.get_cluster()
        return d.delete_leader(c.leader, cmd.get('last_lsn'))
    if op == 'history':
        d.get_cluster()
        return d.set_history_value(json.dumps(cmd['value'], separators=(',', ':')))
    if op == 'failover':
        c = d.get_cluster()
        version = c.failover and c.failover.version
        return d.manual_failover(cmd.get('leader'), cmd.get('member'), version=version)
    if op == 'sync':
        c = d.get_cluster()
        return d.write_sync_state(cmd.get('leader'), cmd.get('sync_standby'), cmd.get('quorum'),
                                  version=c.sync.version) is not None
    if op == 'delete_cluster':
        return d.delete_cluster()
    raise ValueError('unknown op ' + op)


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        try:
            out = {'ok': True, 'result': run(cmd)}
        except Exception as e:  # reported to the test, which fails with it
            out = {'ok': False, 'error': repr(e)}
        sys.stdout.write(json.dumps(out, default=str) + '\n')
        sys.stdout.flush()


if __name__ == '__main__':
    main()
