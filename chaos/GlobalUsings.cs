global using ReVirt.Harness;
global using ReVirt.Replication;
