# Sourced by the GPU scripts: appends the folders of the Python wheels' cuDNN (PyTorch's, JAX's)
# to LD_LIBRARY_PATH for the `cudnn` kernel part, after the system's CUDA libraries so that those
# (nvrtc) stay the ones CubeCL compiles with. Does nothing where no wheel brings cuDNN.
cudnn_libs=$(python3 -c '
import glob
import os
import nvidia
print(":".join(sorted({os.path.dirname(p) for b in nvidia.__path__ for p in glob.glob(b + "/**/libcudnn*.so*", recursive=True)})))
' 2>/dev/null)
if [ -n "$cudnn_libs" ]; then export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cudnn_libs; fi
