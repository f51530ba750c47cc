"""pip packaging of the pure-Python core and its command-line tools (`pip install -e .`).

The ROS build (`colcon build`) uses CMakeLists.txt instead: it generates the interfaces in
msg/ and installs this same package beside them. Dependencies are pinned in requirements*.txt
and installed by scripts/setup.sh, so `install_requires` lists only the import-time needs of
the core, unpinned.
"""

from setuptools import find_packages, setup

CONSOLE_SCRIPTS = [
    'dynamic_recon_node=pointmap_ros.ros.node:main',
    'synthetic_camera_node=pointmap_ros.ros.synthetic_camera:main',
    'dynamic_recon_lifecycle_node=pointmap_ros.ros.lifecycle_node:main',
    'pointmap-noise-study=pointmap_ros.tools.noise_study:main',
    'pointmap-run-video=pointmap_ros.tools.run_video:main',
    'pointmap-demo=pointmap_ros.tools.demo:main',
    'pointmap-export-onnx=pointmap_ros.tools.export_onnx:main',
    'pointmap-build-engine=pointmap_ros.tools.build_engine:main',
    'pointmap-bench=pointmap_ros.tools.bench:main',
    'pointmap-bench-pipeline=pointmap_ros.tools.bench_pipeline:main',
    'pointmap-train=pointmap_ros.tools.train:main',
    'pointmap-eval=pointmap_ros.tools.evaluate:main',
    'pointmap-eval-pipeline=pointmap_ros.tools.eval_pipeline:main',
    'pointmap-replay=pointmap_ros.tools.replay:main',
    'pointmap-generate=pointmap_ros.tools.generate:main',
    'pointmap-convert-checkpoint=pointmap_ros.tools.convert_checkpoint:main',
]

setup(
    name='pointmap_ros',
    version='0.1.0',
    description='Dynamic Point Map (DPM) inference and 4D scene understanding for ROS 2',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['pointmap_ros', 'pointmap_ros.*']),
    package_data={'pointmap_ros': ['assets/*.safetensors', 'assets/*.json']},
    install_requires=[
        'numpy',
        'torch==2.13.0',  # pinned: an unpinned torch pulls the CUDA build (GBs)
        'safetensors',
        'opencv-python-headless',
        'scipy',
        'pyyaml',
        'tqdm',
    ],
    extras_require={
        'onnx': ['onnx', 'onnxruntime'],
        'bag': ['rosbags'],
        'plots': ['matplotlib'],
        'test': ['pytest'],
    },
    entry_points={'console_scripts': CONSOLE_SCRIPTS},
    zip_safe=False,
)
