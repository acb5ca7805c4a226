# The configs the calls run: prod.yaml with model_id only (one), and the same with the two deformable rewrites off
# (base), each alone (omc, dbrc).
python3 .gpurun/mkyaml.py /tmp/one.yaml
python3 .gpurun/mkyaml.py /tmp/base.yaml model.deform_bn_relu_concat=false model.offset_mask_conv=false
python3 .gpurun/mkyaml.py /tmp/omc.yaml model.deform_bn_relu_concat=false
python3 .gpurun/mkyaml.py /tmp/dbrc.yaml model.offset_mask_conv=false
