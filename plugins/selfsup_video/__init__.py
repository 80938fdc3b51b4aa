"""Built-in video plugin: temporal contrast between frames or clips of one video (CVRL-style
interval sampling, optional TCN term), any image encoder per frame and R(2+1)D / R3D clip
encoders, video file (PyAV), frame-folder and frame-array sources, and same-video retrieval
evaluation."""
