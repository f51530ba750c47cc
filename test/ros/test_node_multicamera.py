"""Two cameras with identical stamps: one pipeline each, outputs and frames per camera."""

import pytest
from ros_harness import (Collector, ScenePublisher, oracle_args, recon_process, spin_until,
                         wait_for_node)

from pointmap_ros.ros.conversions import stamp_to_ns

pytestmark = pytest.mark.ros  # needs rclpy and DDS

CAMERAS = ('/cam_a', '/cam_b')


@pytest.mark.slow
def test_each_camera_gets_its_own_outputs_and_frames(ros_node):
    collectors = {ns: Collector(ros_node, prefix=f'/dynamic_recon_node/{ns[1:]}')
                  for ns in CAMERAS}
    publishers = {ns: ScenePublisher(ros_node, namespace=ns) for ns in CAMERAS}
    with recon_process(oracle_args(cameras=str(list(CAMERAS)))) as proc:
        for ns, publisher in publishers.items():
            wait_for_node(ros_node, proc, publisher, points=f'/dynamic_recon_node{ns}/points')
        stamps = []
        for t in range(4):
            for publisher in publishers.values():  # same stamp on both cameras
                stamp = publisher.publish_frame(t)
            stamps.append(stamp)
            if t:
                spin_until(ros_node, lambda: all(stamps[-1] in c.stamps('points')
                                                 for c in collectors.values()), 30,
                           f'frame {t} from both cameras', proc)
        for ns, collector in collectors.items():
            name = ns[1:]
            assert collector.stamps('points')[-3:] == stamps[1:]
            objects = collector.msgs['objects'][-1]
            assert objects.header.frame_id == f'{name}/world'

        def last_tf():
            return {(tr.header.frame_id, tr.child_frame_id)
                    for m in collectors['/cam_a'].msgs['tf'] for tr in m.transforms
                    if stamp_to_ns(tr.header.stamp) == stamps[-1]}
        spin_until(ros_node, lambda: {p for p, _ in last_tf()} == {'cam_a/world', 'cam_b/world'},
                   10, 'TF of both cameras', proc)
        tf = last_tf()
        for name in ('cam_a', 'cam_b'):
            assert (f'{name}/world', f'{name}/camera_optical_frame_estimated') in tf
            assert any(parent == f'{name}/world' and child.startswith(f'{name}/object_')
                       for parent, child in tf)
        assert proc.stop() == 0, proc.output()
