"""Visual analysis (`personvit visualize`): attention maps, patch clusters, correspondences, ranked lists."""
